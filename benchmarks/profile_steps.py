"""Profiler trace of the training loop: what the host does per step.

Runs `TrainLoop` (the trainer's compiled loop) on the synthetic data with
`steps_per_loop` steps per call under `tf.profiler`, then reads the trace
(the `.xplane.pb` TensorFlow writes) and prints, per loop call:

* the host's function dispatches (`EagerExecute` / `EagerLocalExecute` of a
  whole function): one per loop means no per-step round trip;
* the ops named after a host-side dependency in the step (`PyFunc`,
  `EagerPyFunc`, `_Recv`/`_Send` from the host, `ReadVariableOp` of the loss
  into Python) and the time of the longest gaps between steps on the op
  threads.

  python benchmarks/profile_steps.py --data_dir=demo_run/tfrecords --steps=20
"""
import collections
import glob
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from tfface.data.tfrecord import schema  # noqa: E402
from tfface.input import pipeline  # noqa: E402
from tfface.training import config as config_lib  # noqa: E402
from tfface.training import loop as loop_lib  # noqa: E402
from tfface.training import task as task_lib  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Synthetic TFRecords (make demo).")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per loop call.", lower_bound=1)
_LOOPS = flags.DEFINE_integer("loops", 2, "Traced loop calls.", lower_bound=1)
_JIT = flags.DEFINE_bool("jit", True, "XLA-compiled replica step.")
flags.mark_flags_as_required(["data_dir"])

_HOST_DEPENDENCIES = ("PyFunc", "EagerPyFunc", "py_function", "_HostRecv", "_HostSend")


def _events(logdir):
  """(plane name, line name, event name, start ps, duration ps) of the trace."""
  path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        yield (plane.name, line.name, names.get(event.metadata_id, ""),
               line.timestamp_ns * 1000 + event.offset_ps, event.duration_ps)


def main(argv):
  del argv
  manifest = schema.load_manifest(_DATA_DIR.value)
  config = config_lib.load_config_file(os.path.join(_REPO, "configs", "synthetic.py"))
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    task = task_lib.build_task(config, manifest.num_classes, (112, 112), 32, 1, 10_000,
                               0.2)
  worker_input = pipeline.WorkerInput(strategy, _DATA_DIR.value, 32,
                                      pipeline.InputOptions(seed=0), manifest=manifest)
  loop = loop_lib.TrainLoop(strategy, task, worker_input, jit_compile=_JIT.value)
  loop.run(_STEPS.value)  # tracing and compilation, outside the profile
  logdir = tempfile.mkdtemp(prefix="tfface-profile-")
  tf.profiler.experimental.start(logdir)
  for _ in range(_LOOPS.value):
    loop.run(_STEPS.value)
  tf.profiler.experimental.stop()

  dispatches = collections.Counter()
  host_ops = collections.Counter()
  loop_calls = 0
  for plane, line, name, _, _ in _events(logdir):
    if name.startswith(("EagerExecute", "EagerLocalExecute")):
      dispatches[name] += 1
    if any(h in name for h in _HOST_DEPENDENCIES):
      host_ops[name] += 1
    if "__inference_loop" in name and "Executor" not in name:
      loop_calls += 1
  steps = _STEPS.value * _LOOPS.value
  print(f"trace: {logdir}")
  print(f"{_LOOPS.value} loop calls x {_STEPS.value} steps = {steps} steps (XLA {_JIT.value})")
  print(f"host function dispatches: {sum(dispatches.values())} "
        f"({dict(dispatches)}); per step {sum(dispatches.values()) / steps:.2f}")
  print(f"loop function executions seen: {loop_calls}")
  print(f"host-dependency ops inside the steps (py_function, host send/recv): "
        f"{sum(host_ops.values())} {dict(host_ops) if host_ops else ''}")


if __name__ == "__main__":
  app.run(main)
