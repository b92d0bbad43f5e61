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
