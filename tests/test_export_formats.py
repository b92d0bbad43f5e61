"""TFLite (float32, float16) and ONNX exports agree with the SavedModel signature."""
import numpy as np
import pytest
import tensorflow as tf

from tfface.export import onnx as onnx_export
from tfface.export import saved_model
from tfface.export import tflite
from tfface.models import build_backbone
from tfface.serving import formats

# Max abs difference of the unit-norm embedding allowed per format.
TOLERANCE = {"tflite": 1e-5, "tflite_fp16": 2e-3, "onnx": 1e-5}


@pytest.fixture(scope="module")
def model_and_reference(tmp_path_factory):
  model = build_backbone("r18", embedding_size=128, units=(1, 1, 1, 1),
                         widths=(16, 32, 64, 128), stem_width=16)
  path = tmp_path_factory.mktemp("keras") / "backbone.keras"
  model.save(path)
  images = np.random.default_rng(4).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
  module, _ = saved_model.build_serving_module(model)
  reference = module.serve_images(tf.constant(images))["embedding"].numpy()
  return str(path), images, reference


@pytest.mark.slow
@pytest.mark.parametrize("export_format", ["tflite", "tflite_fp16", "onnx"])
def test_parity_with_saved_model(export_format, model_and_reference, tmp_path,
                                 record_property):
  if export_format == "onnx":
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
  path, images, reference = model_and_reference
  suffix = ".onnx" if export_format == "onnx" else ".tflite"
  out = str(tmp_path / f"face{suffix}")
  formats.export_model(path, export_format, output=out)
  run = onnx_export.onnx_embed if export_format == "onnx" else tflite.tflite_embed
  got = run(out, images)
  diff = float(np.abs(got - reference).max())
  record_property(f"{export_format}_max_abs_diff", diff)
  print(f"{export_format}: max abs diff vs SavedModel {diff:.3g}")
  assert got.shape == reference.shape
  assert diff <= TOLERANCE[export_format]
  with pytest.raises(ValueError, match="already exists"):
    formats.export_model(path, export_format, output=out)


def test_onnx_export_tool_prints_no_tf2onnx_info_lines(tmp_path):
  pytest.importorskip("tf2onnx")
  from conftest import run_tool  # pylint: disable=import-outside-toplevel
  model = build_backbone("r18", embedding_size=32, units=(1, 1, 1, 1),
                         widths=(8, 8, 16, 16), stem_width=8)
  model.save(tmp_path / "tiny.keras")
  out = tmp_path / "tiny.onnx"
  proc = run_tool("export", f"--model={tmp_path / 'tiny.keras'}", "--format=onnx",
                  f"--output={out}")
  assert proc.stdout.strip() == f"wrote {out}"
  assert "tfonnx.py" not in proc.stderr and "Optimizing ONNX model" not in proc.stderr, proc.stderr
  assert out.stat().st_size > 0


def test_export_output_that_is_a_directory_fails_before_converting(tmp_path):
  (tmp_path / "out.tflite").mkdir()
  with pytest.raises(ValueError, match=rf"^--output={tmp_path / 'out.tflite'}: is a directory"):
    formats.export_model(str(tmp_path / "no_model.keras"), "tflite",
                         output=str(tmp_path / "out.tflite"), overwrite=True)
