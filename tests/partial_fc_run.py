"""Runs Partial FC on R logical CPUs (or as one worker of a cluster) and dumps what it saw.

Logical devices must be configured before TensorFlow initializes, so
tests/test_partial_fc_distributed.py runs this script in fresh processes:

  --mode=compare: 3 steps of the replicated MarginHead + Keras SGD and of
      PartialFC at sample_rate 1.0 on the same data, seed and initial
      weights (a Dense "backbone" on small vectors; the first step without
      the margin, as the margin warm-up trains); then 2 steps of
      PartialFC at sample_rate 0.5 with everything a numpy reference needs
      to recompute step 2, and a checkpoint of step 2 in CKPT_DIR.
  --mode=restore: restores CKPT_DIR (written by another replica count)
      and dumps the assembled centres and momentum.

Under TF_CONFIG (two workers) it builds MultiWorkerMirroredStrategy, runs
the comparison part only and writes OUT/worker{i}.npz.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# The checkout under test, also when run from another directory.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfface import losses  # noqa: E402
from tfface import models  # noqa: E402
from tfface.training.partial_fc import PartialFC  # noqa: E402
from tfface.training.partial_fc import sampling  # noqa: E402

_MODE = flags.DEFINE_enum("mode", "compare", ["compare", "restore"], "What to run.")
_REPLICAS = flags.DEFINE_integer("replicas", 2, "Logical CPU devices (ignored under TF_CONFIG).")
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_CKPT = flags.DEFINE_string("ckpt_dir", None, "Partial FC checkpoint directory (written by "
                            "--mode=compare, read by --mode=restore).")

NUM_CLASSES, SAMPLED_CLASSES, DIM, INPUTS, PER_REPLICA = 11, 40, 8, 12, 6
# A weight decay large enough for its effect on the centres to stand far above
# float tolerance within 3 steps (the tests check that it does), and a
# learning rate that changes every step: Keras's momentum form
# (m = 0.9 m - lr g; w += m) and PyTorch's (m = 0.9 m + g; w -= lr m) differ
# only then.
WD, MOMENTUM, SEED, INIT_STD = 0.05, 0.9, 7, 0.3


def _schedule():
  return keras.optimizers.schedules.PiecewiseConstantDecay([1, 2], [0.05, 0.02, 0.08])


def _strategy():
  if os.environ.get("TF_CONFIG"):
    return tf.distribute.MultiWorkerMirroredStrategy()
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * _REPLICAS.value)
  devices = [d.name for d in tf.config.list_logical_devices("CPU")]
  if _REPLICAS.value == 1:
    return tf.distribute.OneDeviceStrategy(devices[0])
  return tf.distribute.MirroredStrategy(devices)


def _batches(num_replicas, steps, num_classes):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(steps, num_replicas, PER_REPLICA, INPUTS)).astype("float32")
  y = rng.integers(0, num_classes, size=(steps, num_replicas, PER_REPLICA)).astype("int32")
  return x, y


def _per_replica(strategy, array):
  return strategy.experimental_distribute_values_from_function(
      lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group]))


def _backbone(weights=None):
  model = keras.Sequential([keras.Input((INPUTS,)), keras.layers.Dense(DIM, name="fc")])
  model.set_weights(weights or [np.random.default_rng(5).normal(
      0, 0.3, (INPUTS, DIM)).astype("float32"), np.zeros(DIM, "float32")])
  return model


def _local(strategy, value):
  return [np.asarray(v) for v in strategy.experimental_local_results(value)]


def _replicated(strategy, x, y, steps):
  """The trainer's arithmetic: loss share + decay / R, Keras sums gradients in apply."""
  replicas, global_batch = strategy.num_replicas_in_sync, PER_REPLICA * x.shape[1]
  with strategy.scope():
    backbone = _backbone()
    head = models.MarginHead(NUM_CLASSES, embedding_size=DIM, m2=0.5, kernel_initializer=
                             models.RowBlockNormal(stddev=INIT_STD, seed=SEED, block_rows=4))
    optimizer = keras.optimizers.SGD(_schedule(), momentum=MOMENTUM)
    variables = backbone.trainable_variables + head.trainable_variables
    optimizer.build(variables)
  decayed = losses.weight_decay_variables(backbone, head)

  def replica_step(xb, yb, use_margin):
    with tf.GradientTape() as tape:
      embeddings = backbone(xb, training=True)
      logits = head(embeddings, yb if use_margin else None)
      loss = tf.reduce_sum(losses.softmax_cross_entropy(yb, logits)) / global_batch
      total = loss + losses.l2_weight_decay(decayed, WD) / replicas
    grads = tape.gradient(total, variables)
    predicted = tf.argmax(head(embeddings), axis=-1, output_type=tf.int32)
    accuracy = tf.reduce_sum(tf.cast(tf.equal(predicted, yb), tf.float32)) / global_batch
    optimizer.apply(grads, variables)
    return loss, accuracy

  step = tf.function(lambda a, b, use_margin: [
      strategy.reduce("SUM", v, axis=None)
      for v in strategy.run(replica_step, args=(a, b, use_margin))])
  history = [[float(v) for v in step(_per_replica(strategy, x[i]), _per_replica(strategy, y[i]),
                                     i > 0)]
             for i in range(steps)]
  return history, [w.numpy() for w in backbone.weights], head.kernel.numpy()


def _partial_fc(strategy, x, y, steps, num_classes, sample_rate, dump_step=None,
                weight_decay=WD):
  """The same with PartialFC; optionally records step `dump_step`'s inputs and gradients."""
  replicas = strategy.num_replicas_in_sync
  with strategy.scope():
    backbone = _backbone()
    optimizer = keras.optimizers.SGD(_schedule(), momentum=MOMENTUM)
    variables = backbone.trainable_variables
    optimizer.build(variables)
  pfc = PartialFC(strategy, num_classes, DIM, sample_rate=sample_rate, m2=0.5,
                  initializer=models.RowBlockNormal(stddev=INIT_STD, seed=SEED, block_rows=4),
                  momentum=MOMENTUM, weight_decay=weight_decay, seed=SEED)
  decayed = losses.weight_decay_variables(backbone)

  def replica_step(xb, yb, use_margin):
    learning_rate = optimizer.learning_rate  # before `apply` advances the step
    with tf.GradientTape() as tape:
      embeddings = backbone(xb, training=True)
      loss, accuracy = pfc.replica_loss(embeddings, yb, optimizer.iterations, use_margin)
      total = loss + losses.l2_weight_decay(decayed, WD) / replicas
    grads = tape.gradient(total, variables + [pfc.shard_variable()])
    optimizer.apply(grads[:-1], variables)
    pfc.apply_gradients(grads[-1], learning_rate)
    return loss, accuracy, tf.convert_to_tensor(grads[-1])

  @tf.function
  def step(a, b, use_margin):
    loss, accuracy, grad = strategy.run(replica_step, args=(a, b, use_margin))
    return (strategy.reduce("SUM", loss, axis=None),
            strategy.reduce("SUM", accuracy, axis=None), grad)

  history, dump = [], {}
  for i in range(steps):
    if i + 1 == dump_step:
      dump.update(step=int(optimizer.iterations.numpy()), kernel=pfc.assemble_kernel(),
                  fc=[w.numpy() for w in backbone.weights])
    loss, accuracy, grad = step(_per_replica(strategy, x[i]), _per_replica(strategy, y[i]),
                                i > 0)
    history.append([float(loss), float(accuracy)])
    if i + 1 == dump_step:
      dump["grads"] = _local(strategy, grad)
  return history, [w.numpy() for w in backbone.weights], pfc, dump


def _errors(strategy):
  messages = []
  for kwargs in ({"num_classes": 1}, {"num_classes": 10, "sample_rate": 0.0},
                 {"num_classes": 10, "sample_rate": 1.5}):
    try:
      PartialFC(strategy, embedding_size=DIM, **kwargs)
      messages.append("no error")
    except ValueError as e:
      messages.append(str(e))
  return messages


def _compare(strategy):
  replicas = strategy.num_replicas_in_sync
  x, y = _batches(replicas, 3, NUM_CLASSES)
  result = {}
  hist, backbone, kernel = _replicated(strategy, x, y, 3)
  result.update(replicated_history=hist, replicated_backbone=backbone, replicated_kernel=kernel)
  hist, backbone, pfc, _ = _partial_fc(strategy, x, y, 3, NUM_CLASSES, 1.0)
  result.update(pfc_history=hist, pfc_backbone=backbone,
                pfc_shards={r: s.kernel.numpy() for r, s in pfc.shards.items()},
                pfc_ranges=pfc.ranges, errors=_errors(strategy))
  # Negative control: the same without the centres' weight decay.
  _, _, pfc, _ = _partial_fc(strategy, x, y, 3, NUM_CLASSES, 1.0, weight_decay=0.0)
  result["nodecay_shards"] = {r: s.kernel.numpy() for r, s in pfc.shards.items()}
  if os.environ.get("TF_CONFIG"):
    try:
      pfc.assemble_kernel()
    except ValueError as e:
      result["assemble_error"] = str(e)
    return result
  # Sampled: 40 classes at 0.5 (10 a shard), step 2 recorded.
  x, y = _batches(replicas, 2, SAMPLED_CLASSES)
  hist, _, pfc, dump = _partial_fc(strategy, x, y, 2, SAMPLED_CLASSES, 0.5, dump_step=2)
  labels = y[1].reshape(-1)
  samples = {}
  for r, (start, stop) in enumerate(pfc.ranges):
    local = np.where((labels >= start) & (labels < stop), labels - start, -1)
    sample = sampling.sample_classes(local, stop - start, pfc.shards[r].num_sample,
                                     sampling.step_seed(SEED, dump["step"], r))
    samples[r] = {k: v.numpy() for k, v in sample._asdict().items()}
  pfc.save(_CKPT.value, 2)
  result.update(sampled_history=hist, sampled_dump=dump, sampled_x=x, sampled_y=y,
                samples=samples, num_sample={r: s.num_sample for r, s in pfc.shards.items()},
                saved_kernel=pfc.assemble_kernel(),
                saved_momentum=np.concatenate([pfc.shards[r].momentum.numpy()
                                               for r in sorted(pfc.shards)]))
  return result


def _restore(strategy):
  pfc = PartialFC(strategy, SAMPLED_CLASSES, DIM, sample_rate=0.5)
  ckpt = _CKPT.value
  step = PartialFC.latest_complete_step(ckpt)
  message = pfc.restore(ckpt, step)
  return {"step": step, "message": message, "ranges": pfc.ranges,
          "kernel": pfc.assemble_kernel(),
          "momentum": np.concatenate([pfc.shards[r].momentum.numpy()
                                      for r in sorted(pfc.shards)]),
          "devices": [s.kernel.device for s in pfc.shards.values()],
          "plain": [type(s.kernel).__name__ for s in pfc.shards.values()]}


def main(argv):
  del argv
  strategy = _strategy()
  out = _OUT.value
  os.makedirs(out, exist_ok=True)
  result = _compare(strategy) if _MODE.value == "compare" else _restore(strategy)
  name = "result.npz"
  if os.environ.get("TF_CONFIG"):
    name = f"worker{json.loads(os.environ['TF_CONFIG'])['task']['index']}.npz"
  np.savez(os.path.join(out, name), result=np.array(result, dtype=object))


if __name__ == "__main__":
  app.run(main)
