"""`verify` on real models and `tools/verify.py` end to end (JSON, ROC PNGs, errors)."""
import json
import pickle

import cv2
import numpy as np
import pytest

from conftest import run_tool
from tfface import evaluation
from tfface import inference
from tfface.data.insightface import verification_bin
from tfface.data.synthetic import dataset as synthetic
from tfface.evaluation import protocol
from tfface.evaluation import runner
from tfface.models import build_backbone


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("workdir")
  model = build_backbone("r18", embedding_size=128, units=(1, 1, 1, 1),
                         widths=(16, 32, 64, 128), stem_width=16)
  model.save(path / "backbone.keras")
  return path


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
  """synth_val.bin from the synthetic faces, and tiny.bin with two 96x96 images."""
  path = tmp_path_factory.mktemp("bins")
  synthetic.generate(str(path), num_identities=1, images_per_identity=1, num_pairs=40,
                     num_val_identities=4, val_images_per_identity=3)
  rng = np.random.default_rng(0)
  images = []
  for i in range(40):
    size = 96 if i in (5, 6) else 112
    img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (9, 9), 0)
    images.append(cv2.imencode(".jpg", img)[1].tobytes())
  verification_bin.write_bin(str(path / "tiny.bin"), images, [i % 2 == 0 for i in range(20)])
  return path / "synth_val.bin", path / "tiny.bin"


def test_verify_is_the_protocol_on_flip_sums(workdir, bins):
  model = inference.load_embedding_model(str(workdir))
  vbin = verification_bin.load_bin(str(bins[0]))
  images = evaluation.decode_bin_images(vbin)
  result = evaluation.verify(model.keras_model, vbin, batch_size=7, images=images,
                             verbose=False)
  # By hand: RGB decode, raw embeddings of image and mirror, sum, normalize.
  keras_model = model.keras_model
  rgb = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), 1),
                               cv2.COLOR_BGR2RGB) for b in vbin.images])
  np.testing.assert_array_equal(images, rgb)
  raw = keras_model(rgb.astype("float32")).numpy()
  raw_flip = keras_model(rgb[:, :, ::-1].astype("float32")).numpy()
  summed = raw + raw_flip
  expected = protocol.evaluate_embeddings(
      summed / np.linalg.norm(summed, axis=1, keepdims=True), vbin.issame)
  assert result.accuracy_flip_mean == pytest.approx(expected["accuracy_mean"], abs=1e-6)
  np.testing.assert_allclose(result.distances, expected["distances"], atol=1e-5)
  norms = np.linalg.norm(np.concatenate([raw, raw_flip]), axis=1)
  assert result.xnorm == pytest.approx(norms.mean(), rel=1e-5)
  assert result.num_pairs == 40 and result.name == "synth_val"
  single = protocol.evaluate_accuracy(
      raw / np.linalg.norm(raw, axis=1, keepdims=True), vbin.issame)
  np.testing.assert_allclose(result.single_view.distances, single["distances"], atol=1e-5)
  assert result.single_view.threshold == single["best_threshold"]


def test_verify_shows_progress_unless_silenced(workdir, bins, capsys):
  model = inference.load_embedding_model(str(workdir))
  vbin = verification_bin.load_bin(str(bins[0]))
  evaluation.verify(model, vbin, batch_size=16)
  lines = capsys.readouterr().err.splitlines()
  # Not a terminal: plain lines with the count, rate and ETA, no redraws.
  assert any(l.startswith("decode synth_val: 80/80 images [") for l in lines), lines
  last = [l for l in lines if l.startswith("verify synth_val:")][-1]
  assert last.startswith("verify synth_val: 160/160 images [") and "images/s]" in last
  assert not any("\r" in l for l in lines)
  evaluation.verify(model, vbin, batch_size=16, verbose=False)
  assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_verify_tool(workdir, bins, tmp_path):
  out_json = tmp_path / "out" / "verify.json"
  roc_dir = tmp_path / "roc"
  proc = run_tool("verify", f"--model={workdir}", f"--bins={bins[0]},{bins[1]}",
                  "--batch_size=16", f"--output_json={out_json}", f"--roc_dir={roc_dir}")
  assert "acc-flip" in proc.stdout and "synth_val" in proc.stdout
  assert "2 of 40 images are not 112x112" in proc.stderr
  results = json.loads(out_json.read_text())
  assert sorted(results) == ["synth_val", "tiny"]
  model = inference.load_embedding_model(str(workdir))
  for path in bins:
    vbin = verification_bin.load_bin(str(path))
    expected = evaluation.verify(model, vbin, batch_size=16, verbose=False).as_dict()
    got = results[vbin.name]
    for key in ("accuracy_flip_mean", "accuracy_flip_std", "best_threshold",
                "val_far_1e-3", "num_pairs", "tar_far_1e-3"):
      assert got[key] == pytest.approx(expected[key], abs=1e-6), (vbin.name, key)
    assert got["xnorm"] == pytest.approx(expected["xnorm"], rel=1e-5)
    png = (roc_dir / f"{vbin.name}_roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imdecode(np.frombuffer(png, np.uint8), 1).shape[2] == 3


def test_verify_tool_refuses_unsafe_bin(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("owned",))

  bad = tmp_path / "evil.bin"
  bad.write_bytes(pickle.dumps(([Evil()], [True])))
  proc = run_tool("verify", f"--model={tmp_path}", f"--bins={bad}", check=False)
  assert proc.returncode == 1
  assert "error:" in proc.stderr and "evil.bin" in proc.stderr and "refusing" in proc.stderr
  assert "owned" not in proc.stdout
  assert not (tmp_path / "verify.json").exists()


def test_verify_tool_names_a_missing_bin_before_loading_the_model(tmp_path):
  missing = tmp_path / "lfw.bin"
  proc = run_tool("verify", f"--model={tmp_path / 'no_model'}", f"--bins={missing}",
                  check=False)
  assert proc.returncode == 1
  # The .bin is checked first: the (missing) model is never reached. And the
  # error is all there is: TensorFlow's start-up INFO lines are filtered out.
  assert proc.stderr == f"error: {missing}: no such verification .bin file\n", proc.stderr


def test_trainer_verifier_shows_progress_and_records_the_bin(workdir, bins, tmp_path, capsys):
  from tfface.training import verifier as verifier_lib  # pylint: disable=import-outside-toplevel
  backbone = inference.load_embedding_model(str(workdir)).keras_model
  verifier = verifier_lib.Verifier([str(bins[0])], (112, 112), 16, str(tmp_path))
  results, improved = verifier.run(backbone, step=3)
  (result, best), = results
  assert improved
  err = capsys.readouterr().err
  assert "decode synth_val: 80/80 images [" in err
  assert "verify synth_val: 160/160 images [" in err
  record = verifier.results["synth_val"]
  assert record["bin"] == str(bins[0]) and record["step"] == 3
  assert best == record["best_accuracy"] == result.accuracy_flip_mean
  quiet = verifier_lib.Verifier([str(bins[0])], (112, 112), 16, str(tmp_path), verbose=False)
  quiet.run(backbone, step=4)
  assert capsys.readouterr().err == ""


def test_verify_tool_ignores_an_empty_entry_in_bins(bins, tmp_path):
  proc = run_tool("verify", f"--model={tmp_path / 'no_model'}", f"--bins={bins[1]},",
                  check=False)
  assert proc.returncode == 1
  # Past the .bin files (the empty entry is not one): the missing model is reached.
  assert proc.stderr == f"error: {tmp_path / 'no_model'}: no such file or directory\n"
  proc = run_tool("verify", f"--model={tmp_path / 'no_model'}", "--bins=,", check=False)
  assert proc.stderr == "error: --bins names no .bin file\n"


@pytest.mark.parametrize("flag", ["output_json", "roc_dir"])
def test_unwritable_outputs_fail_before_the_model_loads(bins, tmp_path, flag, dir_and_file):
  a_dir, a_file = dir_and_file
  bad = {"output_json": a_dir, "roc_dir": a_file}[flag]
  proc = run_tool("verify", f"--model={tmp_path / 'no_model'}", f"--bins={bins[1]}",
                  f"--{flag}={bad}", check=False)
  assert proc.returncode == 1
  kind = {"output_json": "is a directory; expected a file name",
          "roc_dir": "is a file; expected a directory"}[flag]
  assert proc.stderr == f"error: --{flag}={bad}: {kind}\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"]
  # A parent that cannot be created (a file is in the way) fails as early.
  with pytest.raises(ValueError, match=rf"^--{flag}={a_file}/x: cannot be created, "
                                       rf"{a_file} is a file"):
    runner.verify_model(str(tmp_path / "no_model"), [str(bins[1])],
                                   **{flag: f"{a_file}/x"}, echo=lambda line: None)


def test_too_few_pairs_for_the_folds_is_named_before_the_model_loads(tmp_path):
  image = cv2.imencode(".jpg", np.zeros((112, 112, 3), np.uint8))[1].tobytes()
  small = tmp_path / "small.bin"
  verification_bin.write_bin(str(small), [image] * 4, [True, False])
  with pytest.raises(ValueError, match=rf"^{small}: 2 pairs, but InsightFace's 10-fold "
                                       r"protocol needs at least 10"):
    runner.verify_model(str(tmp_path / "no_model"), [str(small)],
                                   echo=lambda line: None)
  model = lambda images: np.ones((len(images), 8), np.float32)
  with pytest.raises(ValueError, match=rf"^{small}: 2 pairs"):
    evaluation.verify(model, verification_bin.load_bin(str(small)), verbose=False)
