"""TrainLoop: many steps per call, NaN stops, skipped updates, XLA and its fallback."""
import numpy as np
import pytest
import tensorflow as tf

from tfface.training import loop as loop_lib


class _Input:
  """Batches whose label is its position in the stream: 0, 1, 2, ..."""

  def __init__(self):
    self.iterator = iter(tf.data.Dataset.range(1000).map(
        lambda i: (tf.zeros([1, 2, 2, 3], tf.uint8), tf.reshape(tf.cast(i, tf.int32), [1]))))

  def next_replica_batches(self):
    return next(self.iterator)


class _Task:
  """A stand-in for FaceTask: sums the labels it sees; `loss` from `losses` by step."""

  metric_names = ("loss", "accuracy", "weight_decay")
  has_collectives = False

  def __init__(self, losses=None, host_op=False, skip=()):
    self.step = tf.Variable(0, dtype=tf.int64)
    self.seen = tf.Variable(0, dtype=tf.int64)
    self.losses = tf.constant(losses if losses is not None else [1.0] * 1000)
    self.host_op = host_op  # an op XLA has no kernel for
    self.skip = tf.constant(list(skip) or [-1], tf.int64)

  def replica_step(self, images, labels, train_backbone=True, use_margin=True):
    del images, train_backbone, use_margin
    label = tf.cast(labels[0], tf.int64)
    if self.host_op:
      label = tf.numpy_function(lambda x: x, [label], tf.int64)
    self.seen.assign_add(label)
    loss = self.losses[label]
    # An update a loss-scale optimizer would skip leaves the counter alone.
    skipped = tf.reduce_any(tf.equal(self.skip, label))
    self.step.assign_add(tf.where(skipped, tf.constant(0, tf.int64), 1))
    return {"loss": loss, "accuracy": tf.cast(label, tf.float32), "weight_decay": 0.0}


def _loop(task, jit=False):
  warnings = []
  loop = loop_lib.TrainLoop(tf.distribute.OneDeviceStrategy("/cpu:0"), task, _Input(),
                            jit_compile=jit, warn=warnings.append)
  return loop, warnings


def test_one_call_runs_many_steps_and_reports_their_means():
  task = _Task()
  loop, _ = _loop(task)
  first = loop.run(4)
  assert (first.applied, first.nonfinite_step, int(task.step.numpy())) == (4, -1, 4)
  assert first.metrics["accuracy"] == 1.5  # labels 0..3
  second = loop.run(3)
  assert second.metrics["accuracy"] == 5.0 and int(task.seen.numpy()) == sum(range(7))


def test_a_nonfinite_loss_stops_the_loop_at_its_step():
  losses = [1.0] * 1000
  losses[5] = float("nan")
  task = _Task(losses)
  result = _loop(task)[0].run(10)
  # Steps 1-5 ran (labels 0-4); the sixth (label 5) had a NaN loss: no more.
  assert result.nonfinite_step == 6 and np.isnan(result.nonfinite_loss)
  assert result.applied == 5 and int(task.seen.numpy()) == sum(range(6))


def test_skipped_updates_are_not_counted():
  task = _Task(skip=(1, 2))
  result = _loop(task)[0].run(5)
  assert result.applied == 3 and int(task.step.numpy()) == 3
  assert result.metrics["accuracy"] == pytest.approx((0 + 3 + 4) / 3)  # skipped: left out


def test_xla_compiles_the_step_and_gives_the_same_result():
  plain, xla = _Task(), _Task()
  a = _loop(plain)[0].run(6)
  loop, warnings = _loop(xla, jit=True)
  b = loop.run(6)
  assert loop.jit_compile and not warnings
  assert a.metrics == b.metrics and int(xla.seen.numpy()) == int(plain.seen.numpy())


def test_a_step_xla_cannot_compile_falls_back_without_losing_a_batch():
  task = _Task(host_op=True)
  loop, warnings = _loop(task, jit=True)
  result = loop.run(3)
  assert not loop.jit_compile
  assert len(warnings) == 1 and warnings[0].startswith("XLA cannot compile the training step")
  # The batch the failed call took was given back: labels 0, 1, 2, not 1, 2, 3.
  assert int(task.seen.numpy()) == 0 + 1 + 2 and result.applied == 3
