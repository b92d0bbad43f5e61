"""Learning-rate schedules as functions of the optimizer's step counter.

The optimizer evaluates the schedule at its own `iterations` variable, which
the checkpoint restores, so a resumed run continues with exactly the rate an
uninterrupted run would have had. Three shapes, each with an optional linear
warmup from 0:

* `step`: the peak rate multiplied by `decay_factor` at each boundary (the
  ArcFace paper: x0.1 at 100k and 160k of 180k steps);
* `polynomial`: `peak * (1 - progress) ** power` down to 0 at the last step
  (arcface_torch's `PolyScheduler`, power 2);
* `constant`.
"""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfface")
class FaceSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Warmup then step, polynomial or constant decay.

  Args:
    peak_lr: the rate after warmup.
    total_steps: length of the run.
    kind: `step`, `polynomial` or `constant`.
    boundaries: steps (absolute) at which `step` decay multiplies the rate.
    decay_factor: the `step` multiplier.
    power: exponent of the `polynomial` decay.
    warmup_steps: steps of linear warmup from 0 to `peak_lr`.

  Example:
    >>> FaceSchedule(0.1, 180_000, "step", boundaries=(100_000, 160_000))(120_000)
    0.01
  """

  def __init__(self, peak_lr, total_steps, kind="step", boundaries=(),
               decay_factor=0.1, power=2.0, warmup_steps=0):
    if kind not in ("step", "polynomial", "constant"):
      raise ValueError(f"unknown schedule kind {kind!r}")
    self.peak_lr = float(peak_lr)
    self.total_steps = int(total_steps)
    self.kind = kind
    self.boundaries = tuple(int(b) for b in boundaries)
    self.decay_factor = float(decay_factor)
    self.power = float(power)
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    step = ops.cast(step, "float32")
    if self.kind == "step":
      decays = sum(ops.cast(step >= b, "float32") for b in self.boundaries)
      lr = self.peak_lr * ops.power(self.decay_factor, decays)
    elif self.kind == "polynomial":
      span = max(self.total_steps - self.warmup_steps, 1)
      progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
      lr = self.peak_lr * ops.power(1.0 - progress, self.power)
    else:
      lr = ops.convert_to_tensor(self.peak_lr, "float32")
    if self.warmup_steps:
      # Step i (0-based) of warmup trains at (i + 1) / warmup_steps * peak.
      ramp = ops.minimum((step + 1.0) / self.warmup_steps, 1.0)
      lr = ops.where(step < self.warmup_steps, self.peak_lr * ramp, lr)
    return lr

  def get_config(self):
    return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
            "kind": self.kind, "boundaries": self.boundaries,
            "decay_factor": self.decay_factor, "power": self.power,
            "warmup_steps": self.warmup_steps}


def from_config(schedule_config, peak_lr, total_steps) -> FaceSchedule:
  """Builds the schedule of a run from `config.schedule` (fractions of the run).

  Args:
    schedule_config: the `schedule` ConfigDict (kind, decay_at fractions,
      decay_factor, power, warmup_fraction).
    peak_lr: the resolved peak learning rate.
    total_steps: the resolved number of steps.

  Returns:
    A `FaceSchedule`.
  """
  boundaries = [round(f * total_steps) for f in schedule_config.decay_at]
  return FaceSchedule(
      peak_lr, total_steps, schedule_config.kind, boundaries=boundaries,
      decay_factor=schedule_config.decay_factor, power=schedule_config.power,
      warmup_steps=round(schedule_config.warmup_fraction * total_steps))
