"""What a run reports: TensorBoard scalars under `WORKDIR/tensorboard` and plain log lines.

Every number goes to both places: loss, training accuracy (for triplet
training the fraction of active triplets), the learning rate of the logged
step's update, images/s and skipped records at each log step, and for every
verification target Accuracy-Flip, XNorm and the best Accuracy-Flip so far.
Loss and accuracy are means over the steps since the previous log line (the
steps of a compiled loop report once). The log lines
for verification follow InsightFace's (`[lfw][2000]Accuracy-Flip: ...`).
Only the chief writes event files; other workers print their progress only.
"""
import datetime
import os
import sys
import time

import tensorflow as tf

TENSORBOARD_DIR = "tensorboard"


def _eta(seconds):
  return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class Reporter:
  """Logs training progress and verification results.

  Args:
    workdir: the run's directory (event files go to `workdir/tensorboard`).
    is_chief: whether to write event files.
    total_steps: the step the run ends at (for the ETA).
    global_batch: images per step (for images/s).
    prefix: text in front of every line (the worker, under multi-worker).
    stream: where lines go (stdout).
    metric_names: the step's metrics (`FaceTask.metric_names`): loss, then
      `accuracy` or `active`, then `weight_decay`.
  """

  def __init__(self, workdir, is_chief, total_steps, global_batch, prefix="",
               stream=None, metric_names=("loss", "accuracy", "weight_decay")):
    self.total_steps = int(total_steps)
    self.global_batch = int(global_batch)
    self.prefix = prefix
    self.stream = stream or sys.stdout
    self.metric_names = tuple(metric_names)
    self.writer = None
    if is_chief:
      self.writer = tf.summary.create_file_writer(os.path.join(workdir, TENSORBOARD_DIR))
    self._mark = None

  def line(self, text):
    """Writes one plain log line."""
    print(f"{self.prefix}{text}", file=self.stream, flush=True)

  def start(self, step):
    """Starts the images/s clock at `step`."""
    self._mark = (step, time.perf_counter())

  def scalars(self, step, values):
    """Writes `{name: value}` as TensorBoard scalars (chief only)."""
    if self.writer is None:
      return
    with self.writer.as_default(step=int(step)):
      for name, value in values.items():
        tf.summary.scalar(name, float(value))
    self.writer.flush()

  def progress(self, step, metrics, lr, skipped=0):
    """Logs a training step: loss, accuracy (or active triplets), lr, images/s, ETA.

    Args:
      step: the optimizer step reached.
      metrics: `{name: value}` means since the previous log line.
      lr: the learning rate of this step's update.
      skipped: records dropped by the input so far.
    """
    last_step, last_time = self._mark or (step, time.perf_counter())
    now = time.perf_counter()
    steps = max(step - last_step, 0)
    rate = steps * self.global_batch / max(now - last_time, 1e-9)
    eta = (self.total_steps - step) * (now - last_time) / steps if steps else 0.0
    self._mark = (step, now)
    second = self.metric_names[1]
    label = {"accuracy": "acc"}.get(second, second)
    text = (f"step {step}/{self.total_steps} loss {metrics.get('loss', float('nan')):.4f} "
            f"{label} {metrics.get(second, float('nan')):.4f} lr {lr:.6g} "
            f"{rate:,.1f} images/s ETA {_eta(eta)}")
    if skipped:
      text += f" skipped records {skipped}"
    self.line(text)
    scalars = {f"train/{name}": value for name, value in metrics.items()}
    scalars.update({"train/learning_rate": lr, "train/images_per_second": rate,
                    "train/skipped_records": skipped})
    self.scalars(step, scalars)

  def verification(self, step, result, best):
    """Logs one target's result (`VerificationResult`) and its best Accuracy-Flip."""
    name = result.name
    self.line(f"[{name}][{step}]XNorm: {result.xnorm:f}")
    self.line(f"[{name}][{step}]Accuracy-Flip: {result.accuracy_flip_mean:.5f}"
              f"+-{result.accuracy_flip_std:.5f}")
    values = {f"verification/{name}/accuracy_flip": result.accuracy_flip_mean,
              f"verification/{name}/xnorm": result.xnorm}
    if best >= 0:  # none yet when only the untrained model was measured
      self.line(f"[{name}][{step}]Accuracy-Highest: {best:.5f}")
      values[f"verification/{name}/best_accuracy_flip"] = best
    self.scalars(step, values)

  def close(self):
    if self.writer is not None:
      self.writer.close()
