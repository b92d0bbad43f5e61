"""Aligns raw photos (folder per identity) into 112x112 ArcFace crops with MTCNN.

  python tools/align_faces.py --input_dir=raw --output_dir=aligned [--strict]

Keeps the RAW/IDENTITY/IMAGE structure, so `tools/img2rec.py` can pack the
output. Photos without a face are skipped; with several faces the largest is
kept (or the photo skipped with --strict); all of them are listed at the end.
Needs the optional `mtcnn` package (`pip install 'tfface[align]'`).
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_INPUT_DIR = flags.DEFINE_string("input_dir", None, "Raw photos, one folder per identity.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the aligned crops go.")
_STRICT = flags.DEFINE_boolean("strict", False,
                               "Skip photos with several faces instead of keeping the largest.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 112, "Side of the aligned crops.",
                                   lower_bound=1)
flags.mark_flags_as_required(["input_dir", "output_dir"])


def main(argv):
  del argv  # unused
  from tfface.align import folder  # pylint: disable=g-import-not-at-top
  report = folder.align_folder(_INPUT_DIR.value, _OUTPUT_DIR.value, strict=_STRICT.value,
                               image_size=_IMAGE_SIZE.value, echo=print)
  print(report.summary())


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
