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


def _mixed_workdir(root, policy):
  """A workdir whose backbone trained under `policy`, and its float32 twin."""
  import keras  # pylint: disable=import-outside-toplevel
  kwargs = dict(embedding_size=32, units=(1, 1, 1, 1), widths=(16, 16, 32, 64),
                stem_width=16)
  keras.mixed_precision.set_global_policy(policy)
  try:
    mixed = build_backbone("r18", **kwargs)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert mixed.get_layer("stem_conv").compute_dtype != "float32"
  # Moves the BatchNorm statistics and weights off their initial values.
  rng = np.random.default_rng(7)
  mixed.set_weights([(w + rng.normal(0, 0.05, w.shape)).astype(w.dtype)
                     if w.ndim else w for w in mixed.get_weights()])
  workdir = root / f"workdir_{policy}"
  workdir.mkdir()
  mixed.save(workdir / "backbone.keras")
  reference = build_backbone("r18", **kwargs)
  reference.set_weights(mixed.get_weights())
  return str(workdir), reference


@pytest.fixture(scope="module", params=["mixed_bfloat16", "mixed_float16"])
def mixed_precision_workdir(request, tmp_path_factory):
  workdir, reference = _mixed_workdir(tmp_path_factory.mktemp("mixed"), request.param)
  images = np.random.default_rng(5).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
  module, _ = saved_model.build_serving_module(reference)
  expected = module.serve_images(tf.constant(images))["embedding"].numpy()
  return workdir, images, expected


@pytest.mark.slow
def test_mixed_precision_exports_compute_in_float32(mixed_precision_workdir, tmp_path):
  workdir, images, expected = mixed_precision_workdir
  outputs = {}
  version_dir = formats.export_model(workdir, "saved_model",
                                     export_dir=str(tmp_path / "serving"), version=1,
                                     threshold=1.0)
  loaded = tf.saved_model.load(version_dir)
  outputs["saved_model"] = loaded.signatures["serve_images"](
      images=tf.constant(images))["embedding"].numpy()
  outputs["tflite"] = tflite.tflite_embed(
      formats.export_model(workdir, "tflite", output=str(tmp_path / "face.tflite")),
      images)
  try:
    import onnxruntime  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import tf2onnx  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    pass
  else:
    outputs["onnx"] = onnx_export.onnx_embed(
        formats.export_model(workdir, "onnx", output=str(tmp_path / "face.onnx")),
        images)
  tolerance = dict(TOLERANCE, saved_model=1e-5)
  for name, got in outputs.items():
    assert got.dtype == np.float32, name
    diff = float(np.abs(got - expected).max())
    assert diff <= tolerance[name], f"{name}: max abs diff vs float32 {diff:.3g}"


def test_resolve_model_rebuilds_mixed_precision_backbones_in_float32(tmp_path):
  workdir, reference = _mixed_workdir(tmp_path, "mixed_bfloat16")
  model, _, _ = saved_model.resolve_model(workdir)
  assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
  assert model.name == reference.name
  for got, want in zip(model.get_weights(), reference.get_weights()):
    np.testing.assert_array_equal(got, want)
  # An in-memory float32 backbone is exported as it is.
  assert saved_model.resolve_model(reference)[0] is reference
