"""Imports InsightFace pretrained weights (ONNX or arcface_torch .pth) into a tfface backbone.

  python tools/import_weights.py --source=w600k_r50.onnx --network=r50 \
      --output=w600k_r50.keras
  python tools/import_weights.py --source=backbone.pth --network=r100 \
      --output=r100.keras

The `.keras` file takes raw RGB pixels (0-255) like every tfface model and
works with tools/verify.py and tools/export.py. Fails, writing nothing, with
a list of every tensor left unmatched and every shape that differs.
"""
import json

from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_SOURCE = flags.DEFINE_string(
    "source", None, "ONNX model (.onnx) or arcface_torch state_dict (.pth).")
_NETWORK = flags.DEFINE_string(
    "network", None, "tfface backbone: r18, r34, r50, r100, r200, mbf.")
_OUTPUT = flags.DEFINE_string("output", None, "The .keras file to write.")
_EMBEDDING_SIZE = flags.DEFINE_integer(
    "embedding_size", 512, "Embedding width; 0 takes it from the source.", lower_bound=0)
_INPUT_MEAN = flags.DEFINE_float(
    "input_mean", None, "Pixel mean the source expects (default: found in the "
    "ONNX graph, else arcface_torch's 127.5).")
_INPUT_STD = flags.DEFINE_float(
    "input_std", None, "Pixel std the source expects (default: found in the "
    "ONNX graph, else arcface_torch's 127.5).", lower_bound=1e-6)
_OVERRIDES = flags.DEFINE_string(
    "overrides", None, "JSON object of further build_backbone options for "
    'non-standard sources, e.g. \'{"blocks_per_stage": [2, 8, 12, 4], '
    '"scale": 4}\' for arcface_torch mbf_large.')
flags.mark_flags_as_required(["source", "network", "output"])


def main(argv):
  del argv  # unused
  from tfface import weights  # pylint: disable=import-outside-toplevel
  try:
    overrides = json.loads(_OVERRIDES.value) if _OVERRIDES.value else {}
  except json.JSONDecodeError as e:
    raise ValueError(f"--overrides is not valid JSON: {e}") from e
  if not isinstance(overrides, dict):
    raise ValueError("--overrides must be a JSON object of build_backbone options")
  # 0 is "take it from the source": the library's None.
  report = weights.convert(
      _SOURCE.value, _OUTPUT.value, _NETWORK.value,
      embedding_size=_EMBEDDING_SIZE.value or None,
      input_mean=_INPUT_MEAN.value, input_std=_INPUT_STD.value, **overrides)
  print(f"imported {report['tensors']} tensors from {report['source']} "
        f"({report['format']}) into {report['network']} "
        f"(embedding {report['embedding_size']})")
  print(f"input: (x - {report['input_mean']:g}) / {report['input_std']:g} on "
        f"RGB pixels, {report['normalization']}; BatchNorm epsilon "
        f"{report['bn_epsilon']:g}; {report['identity_batchnorms']} "
        "identity-form BatchNorms stand for ones the source had folded away")
  print(f"wrote {report['output']}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
