"""`tools/embed.py` and `tools/compare.py` with an export, a workdir and --align.

The encoder is the constructed pixel model (tests/pixel_model.py), whose
answers are known: a face and its re-encoded copy are the same person, the
astronaut's face and a coffee cup are not.
"""
import json
import os

import cv2
import numpy as np
import pytest
import skimage.data

from conftest import run_tool
from pixel_model import build_pixel_model
from tfface import export
from tfface import inference
from tfface.data.insightface import verification_bin
from tfface.data.synthetic import dataset as synthetic
from tfface.inference import decode
from tfface.serving import image_files

THRESHOLD = 1.17  # the workdir's (flip-summed) verification threshold


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A workdir, its export, and a folder of faces (one 130x130, to be resized)."""
  root = tmp_path_factory.mktemp("embed")
  synthetic.generate(str(root), num_identities=1, images_per_identity=1, num_pairs=40,
                     num_val_identities=4, val_images_per_identity=3)
  workdir = root / "workdir"
  workdir.mkdir()
  model = build_pixel_model()
  model.save(workdir / "backbone.keras")
  (workdir / "verification.json").write_text(json.dumps(
      {"synth_val": {"step": 5, "accuracy_flip_mean": 0.8, "best_threshold": THRESHOLD,
                     "bin": str(root / "synth_val.bin")}}))
  export_path = export.export_saved_model(str(workdir), str(root / "export" / "face"), 1,
                                          verbose=False)
  faces = root / "faces"
  astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
  coffee = cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)
  for rel, image in (("ann/1.png", astronaut[60:172, 170:282]),
                     ("ann/2.jpg", astronaut[60:172, 170:282]),
                     ("bob/1.png", coffee[150:280, 200:330])):
    (faces / rel).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(faces / rel), image)
  return model, workdir, export_path, faces


def _expected(model, images, flip=True):
  images = np.stack(images).astype("float32")
  emb = model(images).numpy()
  if flip:
    emb = emb + model(images[:, :, ::-1]).numpy()
  return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _decoded(paths):
  return [decode.decode_image(p.read_bytes(), (112, 112))[0] for p in paths]


@pytest.mark.slow
def test_embed_tool_with_export(setup, tmp_path):
  model, _, export_path, faces = setup
  out = tmp_path / "emb.npy"
  proc = run_tool("embed", f"--model={export_path}", f"--input={faces}", f"--output={out}")
  # The export serves single-view embeddings, so that is what it embeds.
  assert "embedded 3 images (single_view)" in proc.stdout
  files = (tmp_path / "emb.files.txt").read_text().split()
  assert files == ["ann/1.png", "ann/2.jpg", "bob/1.png"]
  embeddings = np.load(out)
  assert embeddings.dtype == np.float32 and embeddings.shape == (3, 64)
  decoded = _decoded([faces / f for f in files])
  np.testing.assert_allclose(embeddings, _expected(model, decoded, flip=False), atol=1e-5)
  assert np.abs(embeddings - _expected(model, decoded)).max() > 1e-2  # not the flip sum


@pytest.mark.slow
def test_compare_tool_uses_stored_threshold(setup, tmp_path):
  _, _, export_path, faces = setup
  stored = inference.load_embedding_model(export_path).threshold
  assert stored != THRESHOLD  # measured at export time on the served form
  copy = tmp_path / "copy.png"
  copy.write_bytes((faces / "ann" / "1.png").read_bytes())
  proc = run_tool("compare", f"--model={export_path}", str(faces / "ann" / "1.png"),
                  str(copy))
  assert "cosine similarity: 1.0000" in proc.stdout
  assert "embedding:         single_view" in proc.stdout
  assert f"threshold:         {stored:.4f} (verification on synth_val)" in proc.stdout
  assert "verdict:           same person" in proc.stdout
  # A different identity (the coffee cup) comes out different.
  other = run_tool("compare", f"--model={export_path}", str(faces / "ann" / "1.png"),
                   str(faces / "bob" / "1.png"))
  assert "verdict:           different people" in other.stdout, other.stdout
  with pytest.raises(OSError, match="missing.png"):
    image_files.compare_images(export_path, str(copy), str(tmp_path / "missing.png"))


def test_compare_in_process(setup, tmp_path):
  model, workdir, export_path, faces = setup
  a, a2, b = faces / "ann" / "1.png", faces / "ann" / "2.jpg", faces / "bob" / "1.png"
  result = image_files.compare_images(str(workdir), str(a), str(b), threshold=1e-4)
  imgs = _decoded([a, b])
  ea, eb = _expected(model, imgs)  # a workdir compares flip sums
  assert result.embedding == "flip_sum"
  assert result.cosine == pytest.approx(float(np.dot(ea, eb)), abs=1e-5)
  assert result.distance == pytest.approx(2 - 2 * result.cosine, abs=1e-5)
  assert not result.same and result.threshold_source == "given"
  # Known answers at the workdir's and the export's own thresholds: the
  # re-encoded face is the same person, the coffee cup is not.
  for model_path, threshold in ((workdir, THRESHOLD), (export_path, None)):
    same = image_files.compare_images(str(model_path), str(a), str(a2))
    different = image_files.compare_images(str(model_path), str(a), str(b))
    if threshold is not None:
      assert same.threshold == different.threshold == threshold
    assert same.same and same.distance < 0.1, same
    assert not different.same and different.distance > different.threshold + 0.3, different
  # A pair of a .bin, with its ground truth; the .keras file has no threshold.
  bin_path = tmp_path / "pairs.bin"
  encoded = [cv2.imencode(".png", cv2.cvtColor(i, cv2.COLOR_RGB2BGR))[1].tobytes()
             for i in imgs]
  verification_bin.write_bin(str(bin_path), [encoded[0], encoded[0], encoded[0], encoded[1]],
                             [True, False])
  same = image_files.compare_images(str(workdir / "backbone.keras"), bin_path=str(bin_path),
                                    pair=0)
  assert same.truth and same.same and same.distance < 1e-6
  assert same.threshold == inference.DEFAULT_THRESHOLD
  diff = image_files.compare_images(str(workdir), bin_path=str(bin_path), pair=-1)
  assert diff.truth is False and diff.cosine == pytest.approx(result.cosine, abs=1e-5)
  assert not diff.same
  with pytest.raises(ValueError, match="pair 2 out of range"):
    image_files.compare_images(str(workdir), bin_path=str(bin_path), pair=2)


@pytest.mark.slow
def test_embed_with_align(setup, tmp_path):
  pytest.importorskip("mtcnn")
  model, workdir, _, _ = setup
  raw = tmp_path / "raw"
  raw.mkdir()
  photo = skimage.data.astronaut()
  cv2.imwrite(str(raw / "astronaut.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
  cv2.imwrite(str(raw / "wall.png"), np.full((160, 160, 3), 90, np.uint8))
  out = tmp_path / "aligned.npy"
  report = image_files.embed_files(str(workdir), str(raw), str(out), align=True)
  assert report.files == ["astronaut.jpg"] and report.no_face == ["wall.png"]
  from tfface.align import detector  # pylint: disable=import-outside-toplevel
  from tfface.align import folder  # pylint: disable=import-outside-toplevel
  crop = detector.FaceAligner().align(folder.read_rgb(str(raw / "astronaut.jpg"))).image
  np.testing.assert_allclose(np.load(out), _expected(model, [crop]), atol=1e-5)


def test_embed_output_that_is_a_directory_fails_before_the_model_loads(setup, tmp_path):
  _, _, _, faces = setup
  (tmp_path / "emb").mkdir()
  proc = run_tool("embed", f"--model={tmp_path / 'no_model'}", f"--input={faces}",
                  f"--output={tmp_path / 'emb'}", check=False)
  assert proc.returncode == 1
  assert proc.stderr == (f"error: --output={tmp_path / 'emb'}: is a directory; expected a "
                         "file name\n")
  assert [p.name for p in tmp_path.iterdir()] == ["emb"]
  # The file list beside it, too.
  (tmp_path / "e.files.txt").mkdir()
  with pytest.raises(ValueError, match=rf"^--output={tmp_path / 'e.npy'}: its file list "
                                       rf"{tmp_path / 'e.files.txt'} is a directory"):
    image_files.embed_files(str(tmp_path / "no_model"), str(faces), str(tmp_path / "e.npy"))


def test_embed_failing_to_write_leaves_no_file_list(setup, tmp_path, monkeypatch):
  _, workdir, _, faces = setup
  out = tmp_path / "emb.npy"
  replace = os.replace

  def fail_on_the_embeddings(src, dst):
    if os.fspath(dst) == str(out):
      raise OSError(28, "No space left on device")
    replace(src, dst)

  monkeypatch.setattr(os, "replace", fail_on_the_embeddings)
  with pytest.raises(OSError, match="No space left"):
    image_files.embed_files(str(workdir), str(faces), str(out), verbose=False)
  assert list(tmp_path.iterdir()) == []
