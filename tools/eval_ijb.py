"""IJB-B / IJB-C 1:1 template verification with InsightFace's protocol (eval_ijbc.py).

  python tools/eval_ijb.py --model=WORKDIR_OR_EXPORT_OR_KERAS --ijb_dir=DIR \
      --target=IJBC [--batch_size=64] [--output_json=ijbc.json] [--roc_dir=roc]

DIR is InsightFace's layout: `loose_crop/*.jpg` and `meta/ijbc_face_tid_mid.txt`,
`meta/ijbc_name_5pts_score.txt`, `meta/ijbc_template_pair_label.txt` (`ijbb_*`
for IJBB). Prints TAR (%) at FAR = 1e-6 ... 1e-1 as InsightFace's table.
`--noflip_test`, `--nodetector_score` and `--nonorm_score` are InsightFace's
other test modes (no mirror image; no detector weighting; L2 per image).
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_MODEL = flags.DEFINE_string(
    "model", None, "SavedModel export (version dir or model base), training "
    "workdir, or .keras file.")
_IJB_DIR = flags.DEFINE_string("ijb_dir", None, "Directory with loose_crop/ and meta/.")
_TARGET = flags.DEFINE_enum("target", "IJBC", ["IJBC", "IJBB"], "Which meta files to use.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per forward pass.", lower_bound=1)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the results here.")
_ROC_DIR = flags.DEFINE_string("roc_dir", None, "Write TARGET_roc.png (e.g. ijbc_roc.png) here.")
_FLIP_TEST = flags.DEFINE_boolean(
    "flip_test", True, "Add the embedding of the mirror image (InsightFace's F mode).")
_DETECTOR_SCORE = flags.DEFINE_boolean(
    "detector_score", True, "Weight each image by its detector score (D mode).")
_NORM_SCORE = flags.DEFINE_boolean(
    "norm_score", True, "Keep embedding norms; --nonorm_score L2-normalises each image "
    "before pooling (N mode).")
_NUM_THREADS = flags.DEFINE_integer(
    "num_threads", None, "Threads decoding and aligning images, at least 1 (default: the "
    "CPU count, at most 8).", lower_bound=1)
flags.mark_flags_as_required(["model", "ijb_dir"])


def main(argv):
  del argv  # unused
  from tfface.evaluation.ijb import runner  # pylint: disable=g-import-not-at-top
  runner.evaluate_ijb(_MODEL.value, _IJB_DIR.value, target=_TARGET.value,
                      batch_size=_BATCH_SIZE.value, flip_test=_FLIP_TEST.value,
                      detector_score=_DETECTOR_SCORE.value, norm_score=_NORM_SCORE.value,
                      output_json=_OUTPUT_JSON.value, roc_dir=_ROC_DIR.value,
                      num_threads=_NUM_THREADS.value)


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
