"""Writes every image of a `.rec` dataset to `OUT/<label>/<key>.jpg`.

  python tools/rec2img.py --rec_dir=DIR --output_dir=OUT [--overwrite]

The stored JPEG bytes are written unchanged, so colours are right. The tree
is written beside OUT under a temporary name and renamed to OUT when every
image is written: a failure (a broken record, an .idx that does not match the
.rec) leaves nothing. An existing non-empty OUT is refused unless --overwrite.
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_REC_DIR = flags.DEFINE_string("rec_dir", None, "Directory with train.rec and train.idx.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Root of the per-label folders.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace an existing non-empty --output_dir (whole, and only "
                               "once every image is written).")
flags.mark_flags_as_required(["rec_dir", "output_dir"])


def main(argv):
  del argv  # unused
  from tfface.data.insightface import conversions  # after absl parsed the flags: fast --help
  count = conversions.rec_to_images(_REC_DIR.value, _OUTPUT_DIR.value, progress=True,
                                    overwrite=_OVERWRITE.value)
  print(f"wrote {count} images under {_OUTPUT_DIR.value}")


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
