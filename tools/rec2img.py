"""Writes every image of a `.rec` dataset to `OUT/<label>/<key>.jpg`.

  python tools/rec2img.py --rec_dir=DIR --output_dir=OUT

The stored JPEG bytes are written unchanged, so colours are right.
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_REC_DIR = flags.DEFINE_string("rec_dir", None, "Directory with train.rec and train.idx.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Root of the per-label folders.")
flags.mark_flags_as_required(["rec_dir", "output_dir"])


def main(argv):
  del argv  # unused
  from tfface.data.insightface import conversions  # after absl parsed the flags: fast --help
  count = conversions.rec_to_images(_REC_DIR.value, _OUTPUT_DIR.value, progress=True)
  print(f"wrote {count} images under {_OUTPUT_DIR.value}")


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
