"""SavedModel export for TF Serving: layout, signatures, the served threshold, a fresh
process, saved_model_cli."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_tool
from pixel_model import build_pixel_model
from tfface import export
from tfface import inference
from tfface.data.insightface import verification_bin
from tfface.data.synthetic import dataset as synthetic
from tfface.evaluation import runner
from tfface.inference import decode
from tfface.models import build_backbone

# The trainer's (flip-summed, latest-step) threshold in the workdir: an export
# must not store it, but measure the form it serves.
THRESHOLD = 1.23


def _small_backbone():
  return build_backbone("r18", embedding_size=128, units=(1, 1, 1, 1),
                        widths=(16, 32, 64, 128), stem_width=16)


def _normalize(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def val_bin(tmp_path_factory):
  """synth_val.bin: 60 pairs of synthetic faces (6 identities, 4 images each)."""
  path = tmp_path_factory.mktemp("bins")
  synthetic.generate(str(path), num_identities=1, images_per_identity=1, num_pairs=60,
                     num_val_identities=6, val_images_per_identity=4)
  return str(path / "synth_val.bin")


def _write_verification(workdir, bin_path):
  (workdir / "verification.json").write_text(json.dumps({
      "synth_val": {"step": 100, "accuracy_flip_mean": 0.9, "best_threshold": THRESHOLD,
                    "bin": bin_path}}))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, val_bin):
  """A training workdir as the trainer leaves it: backbone + verification.json."""
  path = tmp_path_factory.mktemp("workdir")
  model = _small_backbone()
  # Non-trivial BN statistics, so a wrong training/inference mode shows up.
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.BatchNormalization) or "bn" in layer.name:
      for v in layer.non_trainable_variables:
        v.assign(np.random.default_rng(1).uniform(0.5, 1.5, v.shape).astype("float32"))
  model.save(path / "backbone.keras")
  _write_verification(path, val_bin)
  return path


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
  base = tmp_path_factory.mktemp("models") / "face"
  path = export.export_saved_model(str(workdir), str(base), 3)
  return base, path


@pytest.fixture(scope="module")
def images():
  """Four smooth random RGB faces-to-be: uint8 [4, 112, 112, 3]."""
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
  return np.stack([cv2.GaussianBlur(i, (5, 5), 0) for i in raw])


def _encode(image_rgb, ext):
  return cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _metadata(path):
  return json.loads(open(os.path.join(path, "assets", "tfface_metadata.json")).read())


def test_layout_and_metadata(exported, val_bin):
  base, path = exported
  assert path == os.path.join(str(base), "3")
  assert sorted(os.listdir(base)) == ["3"]  # no leftover temporary directory
  assert os.path.isfile(os.path.join(path, "saved_model.pb"))
  assert os.path.isdir(os.path.join(path, "variables"))
  meta = _metadata(path)
  # Measured on the workdir's verification target, for the served form.
  assert meta["threshold_target"] == "synth_val" and meta["threshold_bin"] == val_bin
  assert meta["threshold_embedding"] == "single_view" and not meta["flip_tta"]
  assert meta["threshold_source"] == "measured" and meta["threshold"] != THRESHOLD
  assert meta["threshold_measurement"]["num_pairs"] == 60
  assert meta["verification"]["synth_val"]["best_threshold"] == THRESHOLD  # history kept
  assert meta["embedding_size"] == 128 and meta["image_size"] == [112, 112]


def test_refuses_to_overwrite(exported, workdir):
  base, path = exported
  mtime = os.path.getmtime(os.path.join(path, "saved_model.pb"))
  with pytest.raises(ValueError, match="already exists"):
    export.export_saved_model(str(workdir), str(base), 3)
  assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == mtime


def test_signatures_agree_with_keras(exported, workdir, images):
  _, path = exported
  loaded = tf.saved_model.load(path)
  keras_model = tf.keras.models.load_model(workdir / "backbone.keras", compile=False)
  expected = _normalize(keras_model(images.astype("float32")).numpy())
  from_pixels = loaded.signatures["serve_images"](images=tf.constant(images))["embedding"]
  png = [_encode(i, ".png") for i in images]
  from_png = loaded.signatures["serving_default"](image_bytes=tf.constant(png))["embedding"]
  np.testing.assert_allclose(from_png.numpy(), from_pixels.numpy(), atol=1e-6)
  np.testing.assert_allclose(from_pixels.numpy(), expected, atol=1e-5)
  # JPEG decoding in the graph gives the same pixels as cv2 (accurate IDCT).
  jpg = [_encode(i, ".jpg") for i in images]
  decoded = np.stack([decode.decode_image(b)[0] for b in jpg])
  from_jpg = loaded.signatures["serving_default"](image_bytes=tf.constant(jpg))["embedding"]
  by_cv2 = loaded.signatures["serve_images"](images=tf.constant(decoded))["embedding"]
  np.testing.assert_allclose(from_jpg.numpy(), by_cv2.numpy(), atol=1e-6)
  # Another size is resized inside the graph by the decode policy's resize,
  # which tests/test_decode.py checks against OpenCV's; here the exact
  # reference is that function's pixels through serve_images.
  big = _encode(cv2.resize(images[0], (130, 150), interpolation=cv2.INTER_CUBIC), ".png")
  out = loaded.signatures["serving_default"](image_bytes=tf.constant([big]))["embedding"]
  pixels = decode.decode_and_resize_tf(tf.constant(big), (112, 112))
  reference = loaded.signatures["serve_images"](images=pixels[None])["embedding"]
  assert out.shape == (1, 128)
  np.testing.assert_allclose(out.numpy(), reference.numpy(), atol=1e-6)


def test_flip_tta_and_loading(workdir, tmp_path, images):
  model = tf.keras.models.load_model(workdir / "backbone.keras", compile=False)
  raw = model(images.astype("float32")).numpy()
  raw_flip = model(images[:, :, ::-1].astype("float32")).numpy()
  base = tmp_path / "face"
  # Versions sort as numbers, as TF Serving's do: 10 is newer than 9.
  (base / "9").mkdir(parents=True)
  (base / "9" / "saved_model.pb").write_bytes(b"")
  export.export_saved_model(model, str(base), 10, threshold=1.1)
  assert _metadata(base / "10")["threshold_embedding"] == "single_view"
  with pytest.raises(ValueError, match="already exists"):
    export.export_saved_model(model, str(base), 10, flip_tta=True)
  export.export_saved_model(model, str(base), 10, flip_tta=True, overwrite=True,
                            threshold=1.3)
  assert sorted(os.listdir(base)) == ["10", "9"]
  # The model base resolves to its highest version, as TF Serving does, and
  # the overwritten version carries the new metadata and the flip.
  latest = inference.load_embedding_model(str(base))
  assert latest.source.endswith("10") and latest.threshold == 1.3
  assert latest.threshold_embedding == "flip_sum"
  assert _metadata(latest.source)["threshold_source"] == "given"
  serve = latest.saved_model.signatures["serve_images"]
  emb = serve(images=tf.constant(images))["embedding"].numpy()
  np.testing.assert_allclose(emb, _normalize(raw + raw_flip), atol=1e-5)
  np.testing.assert_allclose(latest(images), raw, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(latest.embed(images), _normalize(raw + raw_flip), atol=1e-5)
  from_workdir = inference.load_embedding_model(str(workdir))
  assert from_workdir.threshold == THRESHOLD
  np.testing.assert_allclose(from_workdir(images), raw, rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match="neither a SavedModel"):
    inference.load_embedding_model(str(tmp_path))


@pytest.fixture(scope="module")
def pixel_workdir(tmp_path_factory, val_bin):
  """A workdir of the constructed pixel model (distances spread over [0, 4])."""
  path = tmp_path_factory.mktemp("pixel_workdir")
  build_pixel_model().save(path / "backbone.keras")
  _write_verification(path, val_bin)
  return path


def _accuracy(embeddings, issame, threshold):
  distances = np.sum((embeddings[0::2] - embeddings[1::2]) ** 2, axis=1)
  return float(np.mean((distances < threshold) == np.asarray(issame)))


@pytest.mark.parametrize("flip_tta", [False, True])
def test_stored_threshold_is_for_the_served_embedding(pixel_workdir, val_bin, tmp_path,
                                                      flip_tta):
  path = export.export_saved_model(str(pixel_workdir), str(tmp_path / "face"), 1,
                                   flip_tta=flip_tta, verbose=False)
  meta = _metadata(path)
  served = "flip_sum" if flip_tta else "single_view"
  assert meta["threshold_embedding"] == served
  # What a client gets: serving_default on the .bin's encoded images.
  vbin = verification_bin.load_bin(val_bin)
  loaded = tf.saved_model.load(path)
  embeddings = loaded.signatures["serving_default"](
      image_bytes=tf.constant(vbin.images))["embedding"].numpy()
  client_accuracy = _accuracy(embeddings, vbin.issame, meta["threshold"])
  # What verify reports for the export, for the form it serves.
  (result,) = runner.verify_model(path, [val_bin], echo=lambda line: None, verbose=False)
  point = result.operating_point(served)
  precision = 1 / vbin.num_pairs  # one pair
  assert meta["threshold"] == pytest.approx(point.threshold)
  assert client_accuracy == pytest.approx(point.threshold_accuracy, abs=precision)
  assert runner.stored_threshold_check(inference.load_embedding_model(path), result)[
      "accuracy"] == pytest.approx(client_accuracy, abs=precision)
  # The other form's threshold would give the client another accuracy: the
  # data tell the two forms apart.
  other = result.operating_point("single_view" if flip_tta else "flip_sum")
  assert abs(other.threshold - point.threshold) >= 0.1
  assert abs(_accuracy(embeddings, vbin.issame, other.threshold) - client_accuracy) >= precision


def test_workdir_without_recorded_bin_is_refused(tmp_path):
  workdir = tmp_path / "old"
  workdir.mkdir()
  build_pixel_model().save(workdir / "backbone.keras")
  (workdir / "verification.json").write_text(json.dumps(
      {"lfw": {"step": 1, "best_threshold": THRESHOLD}}))
  with pytest.raises(ValueError, match="'lfw' but not its .bin file.*--threshold_bin"):
    export.export_saved_model(str(workdir), str(tmp_path / "face"), 1)
  assert not (tmp_path / "face").exists()
  with pytest.raises(ValueError, match="missing.bin: verification .bin for the serving"):
    export.export_saved_model(str(workdir), str(tmp_path / "face"), 1,
                              threshold_bin=str(tmp_path / "missing.bin"))


# Runs in a fresh interpreter that never imports tfface or keras.
FRESH_SCRIPT = r'''
import sys
import numpy as np
import tensorflow as tf
path, images_path, png_dir, out_path = sys.argv[1:5]
loaded = tf.saved_model.load(path)
images = np.load(images_path)
pngs = [open(f"{png_dir}/{i}.png", "rb").read() for i in range(len(images))]
a = loaded.signatures["serve_images"](images=tf.constant(images))["embedding"].numpy()
b = loaded.signatures["serving_default"](image_bytes=tf.constant(pngs))["embedding"].numpy()
assert not [m for m in sys.modules if m.split(".")[0] in ("tfface", "tfface_tools")]
np.save(out_path, np.stack([a, b]))
'''


@pytest.mark.slow
def test_fresh_process_and_saved_model_cli(exported, workdir, images, tmp_path):
  _, path = exported
  np.save(tmp_path / "images.npy", images)
  for i, image in enumerate(images):
    (tmp_path / f"{i}.png").write_bytes(_encode(image, ".png"))
  script = tmp_path / "fresh.py"
  script.write_text(FRESH_SCRIPT)
  subprocess.run([sys.executable, str(script), path, str(tmp_path / "images.npy"),
                  str(tmp_path), str(tmp_path / "out.npy")], check=True, timeout=300,
                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  a, b = np.load(tmp_path / "out.npy")
  keras_model = tf.keras.models.load_model(workdir / "backbone.keras", compile=False)
  expected = _normalize(keras_model(images.astype("float32")).numpy())
  np.testing.assert_allclose(a, expected, atol=1e-5)
  np.testing.assert_allclose(b, a, atol=1e-6)

  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True,
                         text=True, timeout=300, check=True).stdout
  assert "signature_def['serving_default']" in shown
  assert "signature_def['serve_images']" in shown
  assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING" in shown
  assert "inputs['images'] tensor_info:\n        dtype: DT_UINT8" in shown
  assert ("outputs['embedding'] tensor_info:\n        dtype: DT_FLOAT\n"
          "        shape: (-1, 128)") in shown


@pytest.mark.slow
def test_export_tool(workdir, tmp_path):
  base = tmp_path / "models" / "face"
  proc = run_tool("export", f"--model={workdir}", f"--export_dir={base}", "--version=7")
  assert os.path.isfile(base / "7" / "saved_model.pb"), proc.stdout
  again = run_tool("export", f"--model={workdir}", f"--export_dir={base}", "--version=7",
                   check=False)
  assert again.returncode == 1
  assert "error:" in again.stderr and "already exists" in again.stderr
  assert sorted(os.listdir(base)) == ["7"]


def test_a_truncated_keras_file_is_named_as_damaged(workdir, tmp_path):
  data = (workdir / "backbone.keras").read_bytes()
  truncated = tmp_path / "truncated.keras"
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError) as info:
    inference.load_embedding_model(str(truncated))
  assert str(info.value).startswith(f"{truncated}: damaged or not a Keras model")
  assert "File not found" not in str(info.value)
  proc = run_tool("export", f"--model={truncated}", f"--export_dir={tmp_path / 'out'}",
                  check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [f"error: {info.value}"]
