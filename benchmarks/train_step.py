"""Training throughput: tfface's real step, with and without XLA, against arcface_torch.

Three measurements, each against a baseline taken in the same run (these
machines are noisy, so read the ratios):

* `step`: `FaceTask.replica_step` in `TrainLoop`'s compiled loop (the code
  `tools/train.py` runs) on a fixed in-memory batch, for each network and
  batch size, with and without XLA; beside it, when torch imports,
  arcface_torch's whole step (`torch_iresnet.ArcFaceStep`: iresnet, ArcFace
  FC, cross-entropy, SGD with momentum and weight decay) on the same input
  and thread count, and the time ratio tfface / arcface_torch. A float32
  matmul probe gives "util" (achieved GFLOP/s of 3x the forward FLOPs over
  the probe's).
* `trainer` (`--trainer_network=r50`): `tools/train.py` end to end, data
  pipeline included, on the synthetic TFRecords; the median images/s of its
  log lines after the first, against arcface_torch's whole step.
* `loop` (`--loop`): `tools/train.py` on the synthetic config with
  `steps_per_loop=1` and with the default, images/s of each.

  python benchmarks/train_step.py --networks=r18,r50,mbf --batch_sizes=16,32
  python benchmarks/train_step.py --networks= --trainer_network=r50 --loop \\
      --data_dir=demo_run/tfrecords

On a machine with a GPU the step runs on the first GPU (docs/performance.md
gives the command lines for per-GPU images/s with and without XLA and mixed
precision).
"""
import os
import re
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.models import complexity  # noqa: E402
from tfface.training import config as config_lib  # noqa: E402
from tfface.training import loop as loop_lib  # noqa: E402
from tfface.training import task as task_lib  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NETWORKS = flags.DEFINE_list("networks", ["r18", "r50", "mbf"], "Backbones to time.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["16", "32"], "Batch sizes to time.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per configuration (one loop).",
                               lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed loops per configuration; the "
                                "fastest counts.", lower_bound=1)
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 1000, "Classes of the ArcFace head.",
                                    lower_bound=2)
_THREADS = flags.DEFINE_integer("threads", 2, "Intra-op threads for TF and torch.",
                                lower_bound=1)
_XLA = flags.DEFINE_list("xla", ["false", "true"], "XLA settings to time.")
_ARCFACE_TORCH_DIR = flags.DEFINE_string(
    "arcface_torch_dir", "", "A checkout of insightface's recognition/arcface_torch: its "
    "own iresnet code is timed instead of benchmarks/torch_iresnet.py's.")
_TRAINER_NETWORK = flags.DEFINE_string("trainer_network", "", "Also time tools/train.py "
                                       "end to end with this network (e.g. r50).")
_TRAINER_BATCH = flags.DEFINE_integer("trainer_batch", 16, "Batch of the trainer run.",
                                      lower_bound=1)
_TRAINER_STEPS = flags.DEFINE_integer("trainer_steps", 8, "Steps of the trainer run.",
                                      lower_bound=2)
_LOOP = flags.DEFINE_bool("loop", False, "Time the synthetic config's trainer with "
                          "steps_per_loop=1 and with its default.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Synthetic TFRecords for the trainer runs "
                                "(make demo writes demo_run/tfrecords).")
_MIXED_PRECISION = flags.DEFINE_enum(
    "mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
    "Compute policy of tfface's step (the torch baseline stays float32).")


def matmul_gflops(size=2048, seconds=3.0):
  """float32 GFLOP/s of repeated [size, size] matmuls, after a one-second warm-up."""
  a, b = tf.random.normal((size, size)), tf.random.normal((size, size))
  step = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
  start = time.perf_counter()
  while time.perf_counter() - start < 1.0:
    step(a, b).numpy()
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    step(a, b).numpy()
    count += 1
  return 2.0 * size**3 * count / (time.perf_counter() - start) / 1e9


class _FixedInput:
  """A `WorkerInput` stand-in that repeats one batch (no decoding in the timing)."""

  def __init__(self, images, labels):
    self.iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())

  def next_replica_batches(self):
    return next(self.iterator)


def time_tfface(name, batch, jit, steps, repeats, num_classes):
  """Seconds per step of FaceTask's step in TrainLoop, and the forward GFLOPs per image."""
  keras.backend.clear_session()
  config = config_lib.load_config_file(os.path.join(_REPO, "configs", "emore.py"))
  config.network = name
  policy = _MIXED_PRECISION.value
  config.mixed_precision = "" if policy == "float32" else policy
  keras.mixed_precision.set_global_policy(policy)
  gpus = tf.config.list_logical_devices("GPU")
  strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  with strategy.scope():
    task = task_lib.build_task(config, num_classes, (112, 112), batch, 1, 10_000, 0.1)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, batch).astype(np.int32)
  loop = loop_lib.TrainLoop(strategy, task, _FixedInput(images, labels), jit_compile=jit)
  loop.run(1)  # tracing and compilation
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    loop.run(steps)
    best = min(best, (time.perf_counter() - start) / steps)
  if jit and not loop.jit_compile:
    print(f"  ({name}: XLA fell back)")
  return best, 2.0 * complexity.count_macs(task.backbone) / 1e9


def time_torch(name, batch, steps, repeats, num_classes, threads):
  """Seconds per arcface_torch step, or None without torch (or for other networks)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_iresnet  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  except ImportError:
    return None
  if name not in torch_iresnet.UNITS and not _ARCFACE_TORCH_DIR.value:
    return None
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  step = torch_iresnet.ArcFaceStep(torch_iresnet.build(name, _ARCFACE_TORCH_DIR.value),
                                   num_classes)
  rng = np.random.default_rng(0)
  images = torch.from_numpy(rng.integers(0, 256, (batch, 3, 112, 112)).astype(np.float32))
  images = (images - 127.5) / 127.5
  labels = torch.from_numpy(rng.integers(0, num_classes, batch))
  step(images, labels)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step(images, labels)
    best = min(best, (time.perf_counter() - start) / steps)
  return best


def _trainer_rate(data_dir, config, *args):
  """Median images/s of tools/train.py's log lines after the first one."""
  command = [sys.executable, os.path.join(_REPO, "tools", "train.py"),
             f"--config={os.path.join(_REPO, 'configs', config)}", f"--data_dir={data_dir}", "--config.val_dir=", "--config.verify_at_start=False",
             f"--workdir={os.path.join(data_dir, os.pardir, 'bench-train')}",
             "--checkpoint_every=100000", *args]
  subprocess.run(["rm", "-rf", os.path.join(data_dir, os.pardir, "bench-train")], check=True)
  out = subprocess.run(command, capture_output=True, text=True, check=True,
                       env=dict(os.environ, TF_NUM_INTRAOP_THREADS=str(_THREADS.value))).stdout
  rates = [float(r.replace(",", "")) for r in re.findall(r"([\d,.]+) images/s", out)]
  return statistics.median(rates[1:]) if len(rates) > 1 else float("nan")


def main(argv):
  del argv
  tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
  baseline = matmul_gflops()
  print(f"baseline: float32 matmul 2048^3: {baseline:.1f} GFLOP/s ({_THREADS.value} threads)")
  print(f"{'network':7s} {'batch':>5s} {'xla':>5s} {'images/s':>9s} {'util':>5s} "
        f"{'vs no-XLA':>9s} {'torch img/s':>11s} {'time vs torch':>13s}")
  for name in _NETWORKS.value:
    for batch in (int(b) for b in _BATCH_SIZES.value):
      torch_seconds = time_torch(name, batch, _STEPS.value, _REPEATS.value,
                                 _NUM_CLASSES.value, _THREADS.value)
      plain = None
      for jit in (x.lower() == "true" for x in _XLA.value):
        seconds, gflops = time_tfface(name, batch, jit, _STEPS.value, _REPEATS.value,
                                      _NUM_CLASSES.value)
        plain = seconds if not jit else plain
        util = 3.0 * gflops * batch / seconds / baseline
        vs_plain = f"{plain / seconds:8.2f}x" if jit and plain else "        -"
        torch_text = (f"{batch / torch_seconds:11.2f} {seconds / torch_seconds:12.2f}x"
                      if torch_seconds else f"{'-':>11s} {'-':>13s}")
        print(f"{name:7s} {batch:5d} {str(jit):>5s} {batch / seconds:9.2f} {util:5.2f} "
              f"{vs_plain} {torch_text}", flush=True)
  if _TRAINER_NETWORK.value or _LOOP.value:
    if not _DATA_DIR.value:
      raise app.UsageError("--data_dir (synthetic TFRecords) is needed for trainer runs")
  if _TRAINER_NETWORK.value:
    name, batch = _TRAINER_NETWORK.value, _TRAINER_BATCH.value
    rate = _trainer_rate(_DATA_DIR.value, "emore.py", f"--network={name}",
                         f"--batch_size={batch}",
                         f"--total_steps={_TRAINER_STEPS.value}", "--config.log_every=2")
    torch_seconds = time_torch(name, batch, _STEPS.value, _REPEATS.value, 300,
                               _THREADS.value)
    text = f"trainer: tools/train.py {name} batch {batch}: {rate:.2f} images/s"
    if torch_seconds:
      text += (f"; arcface_torch's whole step {batch / torch_seconds:.2f} images/s; "
               f"trainer time {batch / rate / torch_seconds:.2f}x arcface_torch's")
    print(text, flush=True)
  if _LOOP.value:
    one = _trainer_rate(_DATA_DIR.value, "synthetic.py", "--total_steps=120",
                        "--config.log_every=20", "--config.steps_per_loop=1")
    many = _trainer_rate(_DATA_DIR.value, "synthetic.py", "--total_steps=120",
                         "--config.log_every=20")
    print(f"loop: synthetic config, steps_per_loop=1 {one:.1f} images/s, default "
          f"{many:.1f} images/s ({many / one:.2f}x)", flush=True)
  print(f"baseline again: {matmul_gflops():.1f} GFLOP/s")


if __name__ == "__main__":
  app.run(main)
