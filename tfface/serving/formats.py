"""`tools/export.py`'s job: one entry point for every export format."""
import os

from tfface import atomic
from tfface.export import onnx
from tfface.export import saved_model
from tfface.export import tflite

FORMATS = ("saved_model", "tflite", "tflite_fp16", "onnx")


def export_model(model_path, export_format="saved_model", export_dir=None,
                 version=None, output=None, flip_tta=False, overwrite=False,
                 threshold=None, threshold_bin=None):
  """Exports a `.keras` file or training workdir in one of `FORMATS`.

  Args:
    model_path: `.keras` file or training workdir.
    export_format: `saved_model` (TF Serving layout), `tflite`, `tflite_fp16`
      or `onnx`.
    export_dir: model base directory (`saved_model` only).
    version: version number (`saved_model` only).
    output: output file (`tflite`, `tflite_fp16`, `onnx`).
    flip_tta: add the horizontal flip's embedding before normalizing.
    overwrite: replace an existing version or file.
    threshold: squared-distance threshold to store with a SavedModel for the
      embedding it serves, instead of measuring one.
    threshold_bin: `.bin` to measure that threshold on (`saved_model` only;
      default: the workdir's verification target).

  Returns:
    The path written.

  Raises:
    ValueError: unknown format, missing or conflicting arguments, an existing
      output without `overwrite`, or a failed conversion.
  """
  if export_format not in FORMATS:
    raise ValueError(f"unknown export format {export_format!r}; expected one of "
                     f"{list(FORMATS)}")
  if export_format == "saved_model":
    if not export_dir or version is None:
      raise ValueError("--format=saved_model needs --export_dir and --version")
    return saved_model.export_saved_model(
        model_path, export_dir, version, flip_tta, overwrite, threshold=threshold,
        threshold_bin=threshold_bin)
  if threshold is not None or threshold_bin:
    raise ValueError(f"--format={export_format} stores no threshold; --threshold and "
                     "--threshold_bin are for --format=saved_model")
  if not output:
    raise ValueError(f"--format={export_format} needs --output (a file path)")
  atomic.check_output_file(output, "--output")
  if os.path.exists(output) and not overwrite:
    raise ValueError(f"{output}: already exists; pass --overwrite to replace it")
  if export_format == "onnx":
    return onnx.export_onnx(model_path, output, flip_tta)
  return tflite.export_tflite(model_path, output, export_format == "tflite_fp16",
                              flip_tta)
