"""Exports a trained backbone for TF Serving (SavedModel), TFLite or ONNX.

  python tools/export.py --model=WORKDIR --export_dir=serving/models/face --version=1
  python tools/export.py --model=WORKDIR --format=tflite_fp16 --output=face_fp16.tflite

A SavedModel lands in EXPORT_DIR/VERSION (the layout TF Serving scans), with
the signatures `serving_default` (image_bytes -> embedding) and `serve_images`
(uint8 images -> embedding), and the decision threshold of the embedding it
serves, measured on the workdir's verification target or --threshold_bin;
see docs/serving.md.
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_MODEL = flags.DEFINE_string("model", None, "Training workdir or .keras file.")
_FORMAT = flags.DEFINE_enum("format", "saved_model",
                            ["saved_model", "tflite", "tflite_fp16", "onnx"],
                            "Export format.")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "SavedModel base directory (BASE/NAME); the version "
    "becomes a subdirectory.")
_VERSION = flags.DEFINE_integer("version", 1, "SavedModel version number.", lower_bound=0)
_OUTPUT = flags.DEFINE_string("output", None, "Output file for tflite/onnx.")
_FLIP_TTA = flags.DEFINE_boolean(
    "flip_tta", False, "Add the horizontal flip's embedding before normalizing.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False,
                                  "Replace an existing version or file.")
_THRESHOLD = flags.DEFINE_float(
    "threshold", None, "Squared-distance threshold to store in the SavedModel for "
    "the embedding it serves (default: measured on --threshold_bin).",
    lower_bound=0.0, upper_bound=4.0)
_THRESHOLD_BIN = flags.DEFINE_string(
    "threshold_bin", None, "Verification .bin to measure the served embedding's "
    "threshold on (default: the workdir's verification target).")
flags.mark_flags_as_required(["model"])


def main(argv):
  del argv  # unused
  from tfface.serving import formats  # pylint: disable=g-import-not-at-top
  path = formats.export_model(
      _MODEL.value, _FORMAT.value, export_dir=_EXPORT_DIR.value,
      version=_VERSION.value, output=_OUTPUT.value, flip_tta=_FLIP_TTA.value,
      overwrite=_OVERWRITE.value, threshold=_THRESHOLD.value,
      threshold_bin=_THRESHOLD_BIN.value)
  print(f"wrote {path}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
