"""Compares the faces in two images (InsightFace's test.py): same person or not.

  python tools/compare.py --model=EXPORT_OR_WORKDIR face1.jpg face2.jpg [--align] [--threshold=T]
  python tools/compare.py --model=EXPORT_OR_WORKDIR --bin=lfw.bin --pair=0

Prints the cosine similarity, the squared distance between the normalized
embeddings, and the verdict at the threshold: by default the one stored with
the model, else 1.4 (see docs/evaluation.md). The embeddings are of the form
that threshold was measured on: for an export, the form it serves.
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_MODEL = flags.DEFINE_string("model", None, "SavedModel export, training workdir or .keras file.")
_ALIGN = flags.DEFINE_boolean("align", False, "Detect and align faces with MTCNN first.")
_THRESHOLD = flags.DEFINE_float(
    "threshold", None, "Squared-distance threshold (default: stored with the model).",
    lower_bound=0.0, upper_bound=4.0)
_BIN = flags.DEFINE_string("bin", None, "Compare a pair of this verification .bin instead.")
_PAIR = flags.DEFINE_integer("pair", 0, "Pair index in --bin (negative: from the end).")
flags.mark_flags_as_required(["model"])


def main(argv):
  images = argv[1:]
  if _BIN.value is None and len(images) != 2:
    raise ValueError(f"expected two image files (or --bin), got {len(images)}: {images}")
  if _BIN.value is not None and images:
    raise ValueError(f"give either --bin or two image files, not both: {images}")
  from tfface.serving import image_files  # pylint: disable=g-import-not-at-top
  result = image_files.compare_images(
      _MODEL.value, *(images or [None, None]), align=_ALIGN.value,
      threshold=_THRESHOLD.value, bin_path=_BIN.value, pair=_PAIR.value)
  print(result.describe())


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
