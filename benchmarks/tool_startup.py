"""Start-up cost of the data tools against `python -c "import numpy"`, same run.

  python benchmarks/tool_startup.py [--work_dir=bench_run/startup] [--repeats=7]

Writes a small synthetic dataset (a `.rec` dir, its `.bin` and a TFRecord
dir), then times whole tool runs in fresh processes, round-robin so that the
load of other processes hits all of them alike, and prints each median as a
multiple of the median of `python -c "import numpy"` (goal for `inspect_data`
on a `.rec` dir: at most 4x). `inspect_data` on a TFRecord dir imports
TensorFlow to decode its samples: it is the reference for what that costs.
"""
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_WORK_DIR = flags.DEFINE_string("work_dir", "bench_run/startup", "Scratch directory.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Runs of each command.", lower_bound=1)

_TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools")


def _dataset(work: str) -> tuple[str, str]:
  """A 50-image `.rec` dir and its TFRecords, made once."""
  from tfface.data.synthetic import dataset as synthetic
  from tfface.data.transcode import transcode
  rec, tfr = os.path.join(work, "rec"), os.path.join(work, "tfrecords")
  if not os.path.exists(os.path.join(tfr, "manifest.json")):
    synthetic.generate(rec, num_identities=10, images_per_identity=5, num_pairs=20,
                       num_val_identities=3, overwrite=True)
    transcode.transcode(rec, tfr, num_shards=3, num_workers=1)
  return rec, tfr


def main(argv):
  del argv  # unused
  rec, tfr = _dataset(_WORK_DIR.value)
  tool = lambda name, *args: [sys.executable, os.path.join(_TOOLS, f"{name}.py"), *args]
  commands = {
      "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
      "inspect_data REC_DIR": tool("inspect_data", rec),
      "inspect_data VAL.bin": tool("inspect_data", os.path.join(rec, "synth_val.bin")),
      "inspect_data --verify TFRECORD_DIR": tool("inspect_data", "--verify", tfr),
      "rec2tfrecord --help": tool("rec2tfrecord", "--help"),
      "inspect_data TFRECORD_DIR (imports TensorFlow)": tool("inspect_data", tfr),
  }
  seconds = {name: [] for name in commands}
  load_before = os.getloadavg()[0]
  for _ in range(_REPEATS.value):
    for name, command in commands.items():
      start = time.perf_counter()
      subprocess.run(command, check=True, capture_output=True)
      seconds[name].append(time.perf_counter() - start)
  base = statistics.median(seconds["python -c 'import numpy'"])
  print(f"medians of {_REPEATS.value} runs each, round-robin; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
  for name, values in seconds.items():
    median = statistics.median(values)
    print(f"  {name}: {median:.3f} s, {median / base:.1f}x import numpy")


if __name__ == "__main__":
  app.run(main)
