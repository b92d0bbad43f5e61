"""Partial FC against the replicated margin head: memory per replica and step time.

  python benchmarks/partial_fc.py --num_classes=1000000 --replicas=2 \
      [--sample_rate=0.1] [--batch_size=64] [--embedding_size=512] [--repeats=2]

Runs on R logical CPU devices (MirroredStrategy), each configuration in its
own process so that its peak RSS is its own:

  (a) replicated: `MarginHead` (ArcFace) + Keras SGD(momentum), mirrored, as
      the trainer runs it today (the kernel gradient all-reduced in `apply`,
      coupled decay as an L2 term, the margin-free accuracy from a second
      matmul);
  (b) partial_fc at sample_rate 1.0 (model parallel, no sampling);
  (c) partial_fc at --sample_rate.

The "backbone" is one Dense layer on small random vectors: the head is what
is measured. A step = forward, backward, all collectives, head and backbone
updates, in one `tf.function`; the time is the median of --steps steps
after --warmup untimed ones (tracing). Head memory per replica is the bytes
of class centres + optimizer slots on the replica with the most rows.

The last line is:
  partial_fc: head memory per replica X.XXx, step time Y.YYx of the replicated head
  (sample_rate S, N classes, R replicas)
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_NUM_CLASSES = flags.DEFINE_integer("num_classes", 1_000_000, "Identities C.")
_REPLICAS = flags.DEFINE_integer("replicas", 2, "Logical CPU devices R.")
_SAMPLE_RATE = flags.DEFINE_float("sample_rate", 0.1, "Partial FC sample rate of (c).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Examples per replica per step.")
_EMBEDDING_SIZE = flags.DEFINE_integer("embedding_size", 512, "Embedding width D.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per configuration.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per configuration.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Rounds over the three configurations; "
                                "each reports its fastest round (robust to other load "
                                "on the machine) and its largest peak RSS.")
_RUN = flags.DEFINE_string("run", None, "Internal: run one configuration "
                           "('replicated' or a sample rate) and print its JSON.")

_INPUTS = 64  # width of the random vectors the Dense "backbone" embeds
_RESULT = "RESULT "


def _strategy(replicas):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
  return tf.distribute.MirroredStrategy(
      [d.name for d in tf.config.list_logical_devices("CPU")][:replicas])


def _measure(run):
  """Builds configuration `run`, times its steps; returns a dict for the parent."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfface import losses  # pylint: disable=g-import-not-at-top
  from tfface import models  # pylint: disable=g-import-not-at-top
  from tfface.training.partial_fc import PartialFC  # pylint: disable=g-import-not-at-top

  strategy = _strategy(_REPLICAS.value)
  replicas, batch, dim = _REPLICAS.value, _BATCH_SIZE.value, _EMBEDDING_SIZE.value
  num_classes, global_batch, wd = _NUM_CLASSES.value, batch * _REPLICAS.value, 5e-4
  init = models.RowBlockNormal(stddev=0.01, seed=0)
  with strategy.scope():
    backbone = keras.Sequential([keras.Input((_INPUTS,)), keras.layers.Dense(dim)])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    if run == "replicated":
      head = models.MarginHead(num_classes, embedding_size=dim, kernel_initializer=init)
      variables = backbone.trainable_variables + head.trainable_variables
      decayed = losses.weight_decay_variables(backbone, head)
      head_bytes = 2 * num_classes * dim * 4  # kernel + momentum on every replica
    else:
      variables = backbone.trainable_variables
      decayed = losses.weight_decay_variables(backbone)
    optimizer.build(variables)
  if run != "replicated":
    pfc = PartialFC(strategy, num_classes, dim, sample_rate=float(run), initializer=init)
    head_bytes = pfc.head_memory_bytes()

  def replicated_step(x, y):
    with tf.GradientTape() as tape:
      embeddings = backbone(x, training=True)
      logits = head(embeddings, y)
      loss = tf.reduce_sum(losses.softmax_cross_entropy(y, logits)) / global_batch
      total = loss + losses.l2_weight_decay(decayed, wd) / replicas
    grads = tape.gradient(total, variables)
    predicted = tf.argmax(head(tf.stop_gradient(embeddings)), axis=-1, output_type=tf.int32)
    accuracy = tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.float32)) / global_batch
    optimizer.apply(grads, variables)
    return loss, accuracy

  def partial_fc_step(x, y):
    learning_rate = optimizer.learning_rate
    with tf.GradientTape() as tape:
      embeddings = backbone(x, training=True)
      loss, accuracy = pfc.replica_loss(embeddings, y, optimizer.iterations)
      total = loss + losses.l2_weight_decay(decayed, wd) / replicas
    *grads, head_grad = tape.gradient(total, variables + [pfc.shard_variable()])
    optimizer.apply(grads, variables)
    pfc.apply_gradients(head_grad, learning_rate)
    return loss, accuracy

  replica_step = replicated_step if run == "replicated" else partial_fc_step

  @tf.function
  def step(x, y):
    loss, _ = strategy.run(replica_step, args=(x, y))
    return strategy.reduce("SUM", loss, axis=None)

  rng = np.random.default_rng(0)
  x = rng.normal(size=(replicas, batch, _INPUTS)).astype("float32")
  y = rng.integers(0, num_classes, size=(replicas, batch)).astype("int32")
  x, y = (strategy.experimental_distribute_values_from_function(
      lambda ctx, a=a: tf.constant(a[ctx.replica_id_in_sync_group])) for a in (x, y))
  for _ in range(_WARMUP.value):
    step(x, y).numpy()
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    step(x, y).numpy()
    times.append(time.perf_counter() - start)
  return {"run": run, "head_bytes": int(head_bytes), "step_s": statistics.median(times),
          "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _child(run):
  """Runs one configuration in a fresh process (its own devices and peak RSS)."""
  args = [sys.executable, os.path.abspath(__file__), f"--run={run}"] + [
      f"--{flag.name}={flag.value}" for flag in (
          _NUM_CLASSES, _REPLICAS, _SAMPLE_RATE, _BATCH_SIZE, _EMBEDDING_SIZE, _STEPS,
          _WARMUP)]
  proc = subprocess.run(args, capture_output=True, text=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT)]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"configuration {run} failed ({proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len(_RESULT):])


def main(argv):
  del argv
  if _RUN.value:
    print(_RESULT + json.dumps(_measure(_RUN.value)), flush=True)
    return
  rate = _SAMPLE_RATE.value
  print(f"{_NUM_CLASSES.value:,} classes x {_EMBEDDING_SIZE.value}, {_REPLICAS.value} "
        f"logical CPU replicas, batch {_BATCH_SIZE.value}/replica; median of "
        f"{_STEPS.value} steps after {_WARMUP.value}", flush=True)
  print(f"{'configuration':22s} {'head MiB/replica':>16s} {'peak RSS MiB':>12s} "
        f"{'step s':>8s}", flush=True)
  configurations = (("replicated", "replicated MarginHead"), ("1.0", "partial_fc 1.0"),
                    (repr(rate), f"partial_fc {rate:g}"))
  results = {}
  for round_index in range(_REPEATS.value):
    for run, label in configurations:
      result = _child(run)
      best = results.setdefault(run, result)
      best["step_s"] = min(best["step_s"], result["step_s"])
      best["peak_rss"] = max(best["peak_rss"], result["peak_rss"])
      print(f"{label:22s} {result['head_bytes'] / 2**20:16.1f} "
            f"{result['peak_rss'] / 2**20:12.0f} {result['step_s']:8.3f}"
            + (f"  (round {round_index + 1})" if _REPEATS.value > 1 else ""), flush=True)
  base, sampled = results["replicated"], results[repr(rate)]
  print(f"partial_fc: head memory per replica "
        f"{sampled['head_bytes'] / base['head_bytes']:.2f}x, step time "
        f"{sampled['step_s'] / base['step_s']:.2f}x of the replicated head (sample_rate "
        f"{rate:g}, {_NUM_CLASSES.value} classes, {_REPLICAS.value} replicas)")


if __name__ == "__main__":
  app.run(main)
