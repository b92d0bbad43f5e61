"""`tools/embed.py` and `tools/compare.py` with an export, a workdir and --align."""
import json

import cv2
import numpy as np
import pytest

from conftest import run_tool

tf = pytest.importorskip("tensorflow")
from tfface import export  # noqa: E402
from tfface.data.insightface import verification_bin  # noqa: E402
from tfface.evaluation import verification  # noqa: E402
from tfface.export import inference  # noqa: E402
from tfface.models import build_backbone  # noqa: E402

THRESHOLD = 1.17


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A workdir, its export, and a folder of faces (one 130x130, to be resized)."""
  root = tmp_path_factory.mktemp("embed")
  workdir = root / "workdir"
  workdir.mkdir()
  model = build_backbone("r18", embedding_size=128, units=(1, 1, 1, 1),
                         widths=(16, 32, 64, 128), stem_width=16)
  model.save(workdir / "backbone.keras")
  (workdir / "verification.json").write_text(json.dumps(
      {"synth_val": {"step": 5, "accuracy_flip_mean": 0.8, "best_threshold": THRESHOLD}}))
  export_path = export.export_saved_model(str(workdir), str(root / "export" / "face"), 1)
  faces = root / "faces"
  rng = np.random.default_rng(3)
  for rel, size in (("ann/1.png", 112), ("ann/2.jpg", 112), ("bob/1.png", 130)):
    (faces / rel).parent.mkdir(parents=True, exist_ok=True)
    img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (9, 9), 0)
    cv2.imwrite(str(faces / rel), img)
  return model, workdir, export_path, faces


def _expected(model, images):
  images = np.stack(images).astype("float32")
  emb = model(images).numpy() + model(images[:, :, ::-1]).numpy()
  return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.mark.slow
def test_embed_tool_with_export(setup, tmp_path):
  model, _, export_path, faces = setup
  out = tmp_path / "emb.npy"
  proc = run_tool("embed", f"--model={export_path}", f"--input={faces}", f"--output={out}")
  assert "embedded 3 images" in proc.stdout
  files = (tmp_path / "emb.files.txt").read_text().split()
  assert files == ["ann/1.png", "ann/2.jpg", "bob/1.png"]
  decoded = [verification.decode_image((faces / f).read_bytes(), (112, 112))[0]
             for f in files]
  embeddings = np.load(out)
  assert embeddings.dtype == np.float32 and embeddings.shape == (3, 128)
  np.testing.assert_allclose(embeddings, _expected(model, decoded), atol=1e-5)


@pytest.mark.slow
def test_compare_tool_uses_stored_threshold(setup, tmp_path):
  _, _, export_path, faces = setup
  copy = tmp_path / "copy.png"
  copy.write_bytes((faces / "ann" / "1.png").read_bytes())
  proc = run_tool("compare", f"--model={export_path}", str(faces / "ann" / "1.png"),
                  str(copy))
  assert "cosine similarity: 1.0000" in proc.stdout
  assert f"threshold:         {THRESHOLD:.4f} (verification on synth_val)" in proc.stdout
  assert "verdict:           same person" in proc.stdout
  with pytest.raises(OSError, match="missing.png"):
    inference.compare_images(export_path, str(copy), str(tmp_path / "missing.png"))


def test_compare_in_process(setup, tmp_path):
  model, workdir, _, faces = setup
  a, b = faces / "ann" / "1.png", faces / "bob" / "1.png"
  result = inference.compare_images(str(workdir), str(a), str(b), threshold=1e-4)
  imgs = [verification.decode_image(p.read_bytes(), (112, 112))[0] for p in (a, b)]
  ea, eb = _expected(model, imgs)
  assert result.cosine == pytest.approx(float(np.dot(ea, eb)), abs=1e-5)
  assert result.distance == pytest.approx(2 - 2 * result.cosine, abs=1e-5)
  assert not result.same and result.threshold_source == "given"
  # A pair of a .bin, with its ground truth; the .keras file has no threshold.
  bin_path = tmp_path / "pairs.bin"
  encoded = [cv2.imencode(".png", cv2.cvtColor(i, cv2.COLOR_RGB2BGR))[1].tobytes()
             for i in imgs]
  verification_bin.write_bin(str(bin_path), [encoded[0], encoded[0], encoded[0], encoded[1]],
                             [True, False])
  same = inference.compare_images(str(workdir / "backbone.keras"), bin_path=str(bin_path),
                                  pair=0)
  assert same.truth and same.same and same.distance < 1e-6
  assert same.threshold == export.DEFAULT_THRESHOLD
  diff = inference.compare_images(str(workdir), bin_path=str(bin_path), pair=-1)
  assert diff.truth is False and diff.cosine == pytest.approx(result.cosine, abs=1e-5)
  with pytest.raises(ValueError, match="pair 2 out of range"):
    inference.compare_images(str(workdir), bin_path=str(bin_path), pair=2)


@pytest.mark.slow
def test_embed_with_align(setup, tmp_path):
  pytest.importorskip("mtcnn")
  skimage_data = pytest.importorskip("skimage.data")
  model, workdir, _, _ = setup
  raw = tmp_path / "raw"
  raw.mkdir()
  photo = skimage_data.astronaut()
  cv2.imwrite(str(raw / "astronaut.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
  cv2.imwrite(str(raw / "wall.png"), np.full((160, 160, 3), 90, np.uint8))
  out = tmp_path / "aligned.npy"
  report = inference.embed_files(str(workdir), str(raw), str(out), align=True)
  assert report.files == ["astronaut.jpg"] and report.no_face == ["wall.png"]
  from tfface.align import detector
  from tfface.align import folder
  crop = detector.FaceAligner().align(folder.read_rgb(str(raw / "astronaut.jpg"))).image
  np.testing.assert_allclose(np.load(out), _expected(model, [crop]), atol=1e-5)
