"""Training-step throughput of the backbones on this machine, beside a matmul baseline.

One step = forward + backward + SGD(momentum) update of backbone + ArcFace
head + softmax cross-entropy + coupled weight decay, in a `tf.function`, on
a fixed random batch (no input pipeline). Warm-up steps (tracing included)
are excluded from the timing.

The baseline is a float32 `tf.matmul` probe in the same run; "util" is the
training step's achieved GFLOP/s (3 x forward FLOPs per image, the usual
forward + backward estimate) divided by the probe's, so figures from busy
or different machines can be compared.

  python benchmarks/train_step.py --networks=r18,r50,mbf --batch_size=32 --steps=3
"""
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface import losses  # noqa: E402
from tfface import models  # noqa: E402
from tfface.models import complexity  # noqa: E402

_NETWORKS = flags.DEFINE_list("networks", ["r18", "r50", "mbf"], "Backbones to time.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per step.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per network.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps (tracing) per network.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 1000, "Classes of the ArcFace head.")
_POLICY = flags.DEFINE_string("policy", "float32", "Keras dtype policy.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "Side of the baseline matmul.")


def matmul_gflops(size, seconds=3.0):
  """float32 GFLOP/s of repeated [size, size] matmuls for about `seconds`."""
  a = tf.random.normal((size, size))
  b = tf.random.normal((size, size))
  step = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
  # Untimed first second: tracing, thread-pool start-up and oneDNN's first
  # calls (a cold probe read 81 GFLOP/s here where a warm one read 191).
  start = time.perf_counter()
  while time.perf_counter() - start < 1.0:
    step(a, b).numpy()
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    step(a, b).numpy()
    count += 1
  return 2.0 * size**3 * count / (time.perf_counter() - start) / 1e9


def time_train_step(name, batch_size, steps, warmup, num_classes):
  """Returns (trainable params, forward GFLOPs per image, images/s) of a backbone."""
  keras.backend.clear_session()
  backbone = models.build_backbone(name)
  head = models.build_head("arcface", num_classes,
                           embedding_size=backbone.output.shape[-1])
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  variables = backbone.trainable_variables + head.trainable_variables
  decayed = losses.weight_decay_variables(backbone, head)

  @tf.function
  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = head(backbone(images, training=True), labels)
      loss = tf.reduce_mean(losses.softmax_cross_entropy(labels, logits))
      loss += losses.l2_weight_decay(decayed, 5e-4)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  rng = np.random.default_rng(0)
  images = tf.constant(rng.integers(0, 256, (batch_size, 112, 112, 3), dtype=np.uint8))
  labels = tf.constant(rng.integers(0, num_classes, batch_size, dtype=np.int32))
  for _ in range(warmup):
    step(images, labels).numpy()
  start = time.perf_counter()
  for _ in range(steps):
    step(images, labels).numpy()
  elapsed = time.perf_counter() - start
  gflops = 2.0 * complexity.count_macs(backbone) / 1e9
  params = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
  return params, gflops, batch_size * steps / elapsed


def main(argv):
  del argv
  keras.mixed_precision.set_global_policy(_POLICY.value)
  baseline = matmul_gflops(_MATMUL_SIZE.value)
  print(f"baseline: float32 matmul {_MATMUL_SIZE.value}^3: {baseline:.1f} GFLOP/s "
        f"({os.cpu_count()} CPUs, policy {_POLICY.value}, batch {_BATCH_SIZE.value})")
  print(f"{'network':8s} {'trainable':>12s} {'GFLOPs/img':>10s} {'images/s':>9s} "
        f"{'GFLOP/s':>8s} {'util':>6s}")
  for name in _NETWORKS.value:
    params, gflops, rate = time_train_step(name, _BATCH_SIZE.value, _STEPS.value,
                                           _WARMUP.value, _NUM_CLASSES.value)
    achieved = 3.0 * gflops * rate
    print(f"{name:8s} {params:12,d} {gflops:10.3f} {rate:9.2f} "
          f"{achieved:8.1f} {achieved / baseline:6.2f}", flush=True)
  # The probe again: a drift between the two shows the machine got busier.
  print(f"baseline again: {matmul_gflops(_MATMUL_SIZE.value):.1f} GFLOP/s")


if __name__ == "__main__":
  app.run(main)
