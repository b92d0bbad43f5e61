"""Sends face images to a TF Serving model and prints embeddings and similarities.

  python tools/serving_client.py --server=localhost:8501 --model=face a.jpg b.jpg
  python tools/serving_client.py --model=face --export_dir=serving/models/face a.jpg b.jpg

Uses the REST API (`/v1/models/NAME:predict`, images base64-encoded as
`{"b64": ...}` under `image_bytes`); see docs/serving.md for the gRPC form.
With --export_dir (or --threshold) each pair also gets its squared distance
and the verdict at the threshold the export stores for the embedding it serves.
The threshold comes from the version requested: --export_dir=BASE/NAME with
--version=N reads BASE/NAME/N; a version directory BASE/NAME/M requests
version M (and --version=N != M is refused); the model base alone requests
TF Serving's newest and reads the newest version directory.
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_SERVER = flags.DEFINE_string("server", "localhost:8501", "TF Serving REST host:port.")
_MODEL = flags.DEFINE_string("model", None, "Model name in TF Serving's config.")
_VERSION = flags.DEFINE_integer(
    "version", None, "Model version (default: the --export_dir version directory's, "
    "else the newest).", lower_bound=0)
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "The served model's export directory (model base or version): "
    "the stored threshold of the version requested decides same/different for each pair.")
_THRESHOLD = flags.DEFINE_float(
    "threshold", None, "Squared-distance threshold for the served embeddings "
    "(overrides --export_dir's).", lower_bound=0.0, upper_bound=4.0)
flags.mark_flags_as_required(["model"])


def main(argv):
  if len(argv) < 2:
    raise ValueError("give at least one image file")
  from tfface.serving import rest_client  # pylint: disable=g-import-not-at-top
  print(rest_client.query_and_describe(_SERVER.value, _MODEL.value, argv[1:],
                                       _VERSION.value, _EXPORT_DIR.value, _THRESHOLD.value))


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
