"""Prints what a dataset path holds: a `.rec` dir, a TFRecord dir or a `.bin`.

  python tools/inspect_data.py PATH
  python tools/inspect_data.py --verify TFRECORD_DIR

Counts, classes, sizes and a few decoded samples. `--verify` reads every
shard of a TFRecord directory and checks its size, record count and digest
against `manifest.json`; it names each bad shard (and the byte offset of its
first corrupt record) and exits 1 when any is bad.
"""
import sys

from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_VERIFY = flags.DEFINE_bool("verify", False, "Check every shard of a TFRecord directory "
                            "against the digests, sizes and counts of its manifest.json.")


def main(argv):
  if len(argv) != 2:
    raise ValueError("expected one PATH (a .rec dir, a TFRecord dir or a .bin); usage: "
                     "inspect_data.py [--verify] PATH")
  from tfface.data import inspection  # after absl parsed the flags: fast --help
  if _VERIFY.value:
    report, ok = inspection.verify(argv[1])
    print(report)
    sys.exit(0 if ok else 1)
  if inspection.reads_tfrecords(argv[1]):
    _cli.import_tensorflow()  # decodes the sample Examples
  print(inspection.describe(argv[1]))


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
