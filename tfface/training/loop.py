"""Many training steps per host round trip, each replica step compiled with XLA.

`TrainLoop.run(n)` is one `tf.function` call that pulls a batch and runs
`FaceTask.replica_step` under `strategy.run` n times in a `tf.range` loop
(Model Garden's `steps_per_loop`). The host sees only the loop's result: the
mean of each metric over the steps whose update was applied, how many were,
and the first step whose loss was not finite (the loop stops there, before
further updates). Nothing in a step waits on the host: no `py_function`, no
`.numpy()`, no Python branching on tensors.

With `jit_compile=True` the replica step is compiled with XLA. On one replica
that is the whole step: backbone, margin head, loss, weight decay and the
optimizer update. With several replicas the gradients must be all-reduced
between backward and update, and collectives inside an XLA cluster are not
reliable on every platform (on CPUs MirroredStrategy's fail to compile and
MultiWorkerMirroredStrategy's crashed the process), so XLA compiles the
forward and backward pass (`FaceTask.compute_gradients`, no collectives)
and the all-reduce and the optimizer update run outside it. Partial FC on
several replicas all-gathers inside the forward pass itself: its steps run
without XLA around the step (its own whole-shard update is compiled). Where XLA still
cannot compile (an op without an XLA kernel), the first call fails before
any update; the loop then warns once, rewinds the input iterator to where
it was, and runs the same steps without XLA.
"""
import dataclasses
import functools
import logging
import os
import shutil
import tempfile

import tensorflow as tf

_LOG = logging.getLogger(__name__)
# Words of the errors TensorFlow raises when XLA cannot compile a function.
_XLA_ERRORS = ("XLA", "xla", "jit_compile", "Detected unsupported operations",
               "No registered", "compil")


@dataclasses.dataclass
class LoopResult:
  """What one call of `TrainLoop.run` did."""

  metrics: dict  # name -> mean over the applied steps (float)
  applied: int  # optimizer updates applied (a loss-scale optimizer may skip some)
  nonfinite_step: int  # the step whose loss was NaN/Inf, or -1
  nonfinite_loss: float = 0.0  # that loss (nan or +-inf)


class TrainLoop:
  """Runs training steps in compiled multi-step loops.

  Args:
    strategy: the run's strategy.
    task: the `FaceTask`.
    worker_input: the `tfface.input.pipeline.WorkerInput` of this worker.
    jit_compile: compile the replica step with XLA (falls back if it cannot).
    warn: callable for the one-line fallback warning (the reporter's).
  """

  def __init__(self, strategy, task, worker_input, jit_compile=True, warn=None):
    self.strategy = strategy
    self.task = task
    self.input = worker_input
    self.jit_compile = bool(jit_compile)
    self._warn = warn or _LOG.warning
    self._loops = {}  # (jit, train_backbone, use_margin) -> tf.function
    self._proven = set()  # loop keys that ran once

  def _build(self, jit, train_backbone, use_margin):
    task, strategy = self.task, self.strategy
    step = functools.partial(task.replica_step, train_backbone=train_backbone,
                             use_margin=use_margin)
    if jit and strategy.num_replicas_in_sync == 1:
      step = tf.function(step, jit_compile=True)
    elif jit and not task.has_collectives:
      compute = tf.function(functools.partial(
          task.compute_gradients, train_backbone=train_backbone, use_margin=use_margin),
                            jit_compile=True)

      def step(images, labels):
        metrics, grads = compute(images, labels)
        task.apply_gradients(grads, train_backbone)
        return metrics
    names = task.metric_names

    @tf.function
    def loop(num_steps):
      sums = {name: tf.constant(0.0) for name in names}
      applied = tf.constant(0, tf.int64)
      nonfinite = tf.constant(-1, tf.int64)
      bad_loss = tf.constant(0.0)
      for _ in tf.range(num_steps):
        before = tf.identity(tf.convert_to_tensor(task.step))
        images, labels = self.input.next_replica_batches()
        per_replica = strategy.run(step, args=(images, labels))
        metrics = {k: tf.reshape(strategy.reduce(tf.distribute.ReduceOp.SUM, v,
                                                 axis=None), [])
                   for k, v in per_replica.items()}
        if not tf.math.is_finite(metrics["loss"]):
          nonfinite = before + 1
          bad_loss = metrics["loss"]
          break
        moved = tf.cast(tf.convert_to_tensor(task.step) > before, tf.float32)
        sums = {k: sums[k] + moved * metrics[k] for k in names}
        applied += tf.cast(moved, tf.int64)
      count = tf.maximum(tf.cast(applied, tf.float32), 1.0)
      return {k: v / count for k, v in sums.items()}, applied, nonfinite, bad_loss

    return loop

  def run(self, num_steps, train_backbone=True, use_margin=True) -> LoopResult:
    """Runs `num_steps` steps (fewer if one's loss is not finite).

    Raises:
      tf.errors.OpError: from the input (corrupt data) or the step.
    """
    key = (self.jit_compile, bool(train_backbone), bool(use_margin))
    if key not in self._loops:
      self._loops[key] = self._build(*key)
    if key[0] and key not in self._proven:
      return self._first_run_with_fallback(key, num_steps)
    return self._call(self._loops[key], num_steps)

  def _call(self, loop, num_steps):
    metrics, applied, nonfinite, bad_loss = loop(tf.constant(num_steps, tf.int64))
    return LoopResult({k: float(v) for k, v in metrics.items()}, int(applied),
                      int(nonfinite), float(bad_loss))

  def _first_run_with_fallback(self, key, num_steps):
    """The first XLA call of a loop; without XLA from here on if it cannot compile."""
    scratch = tempfile.mkdtemp(prefix="tfface-input-")
    snapshot = tf.train.Checkpoint(iterator=self.input.iterator)
    try:
      saved = snapshot.write(os.path.join(scratch, "input"))
      try:
        result = self._call(self._loops[key], num_steps)
      except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
              tf.errors.InternalError, tf.errors.NotFoundError) as e:
        if not any(word in str(e) for word in _XLA_ERRORS):
          raise
        first_line = str(e).strip().splitlines()[0][:200]
        self._warn(f"XLA cannot compile the training step ({first_line}); "
                   "training without XLA (--config.jit_compile=False hides this)")
        self.jit_compile = False
        snapshot.read(saved).assert_consumed()  # the batch the failed call took
        return self.run(num_steps, key[1], key[2])
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
    self._proven.add(key)
    return result
