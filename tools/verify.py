"""Verifies a face encoder on InsightFace `.bin` sets with InsightFace's protocol.

  python tools/verify.py --model=WORKDIR_OR_EXPORT_OR_KERAS \
      --bins=data/lfw.bin,data/cfp_fp.bin --output_json=verify.json --roc_dir=roc

Prints Accuracy-Flip (mean +- std over 10 folds), XNorm, the best threshold,
VAL@FAR=1e-3 and TAR@FAR=1e-3/1e-4 per target, as a table at the end.
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_MODEL = flags.DEFINE_string(
    "model", None, "SavedModel export (version dir or model base), training "
    "workdir, or .keras file.")
_BINS = flags.DEFINE_list("bins", None, "Comma-separated verification .bin files "
                          "(empty entries are ignored).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per forward pass.", lower_bound=1)
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Write the results here, keyed by each .bin's stem.")
_ROC_DIR = flags.DEFINE_string("roc_dir", None, "Write STEM_roc.png files here.")
flags.mark_flags_as_required(["model", "bins"])


def main(argv):
  del argv  # unused
  from tfface.evaluation import runner  # pylint: disable=g-import-not-at-top
  bins = [b for b in _BINS.value if b.strip()]  # "a.bin," splits into "a.bin" and ""
  if not bins:
    raise ValueError("--bins names no .bin file")
  runner.verify_model(_MODEL.value, bins, batch_size=_BATCH_SIZE.value,
                      output_json=_OUTPUT_JSON.value, roc_dir=_ROC_DIR.value)


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
