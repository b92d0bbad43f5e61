"""Prints what a dataset path holds: a `.rec` dir, a TFRecord dir or a `.bin`.

  python tools/inspect_data.py PATH

Counts, classes, sizes and a few decoded samples.
"""
from absl import app

try:
  from tfface_tools import _cli
except ImportError:
  import _cli


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: inspect_data.py PATH (a .rec dir, a TFRecord dir or a .bin)")
  from tfface.data import inspection  # after absl parsed the flags: fast --help
  print(inspection.describe(argv[1]))


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
