"""The synthetic IJB set, tools/eval_ijb.py end to end, and bad inputs."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import ijb_reference
from conftest import run_tool
from tfface.align import transform
from tfface.data.insightface import ijb_meta
from tfface.data.synthetic import faces as synthetic_faces
from tfface.data.synthetic import ijb as synthetic_ijb
from tfface.evaluation.ijb import report
from tfface.evaluation.ijb import runner


def _digests(root):
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def ijb_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("ijb")
  synthetic_ijb.generate_ijb(str(path), num_identities=6, templates_per_identity=3)
  return path


def test_synthetic_ijb_refuses_a_non_empty_directory_unless_overwrite(ijb_dir, tmp_path):
  out = tmp_path / "IJB_release"
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=f"^{re.escape(str(out))}: already exists and is not "
                     "empty; pass --overwrite to replace it$"):
    synthetic_ijb.generate_ijb(str(out), num_identities=6, templates_per_identity=3)
  assert os.listdir(out) == ["notes.txt"] and os.listdir(tmp_path) == ["IJB_release"]
  synthetic_ijb.generate_ijb(str(out), num_identities=6, templates_per_identity=3,
                             overwrite=True)
  assert _digests(out) == _digests(ijb_dir)  # replaced whole: notes.txt is gone
  assert not (out / "notes.txt").exists() and os.listdir(tmp_path) == ["IJB_release"]


def test_synthetic_ijb_is_deterministic_with_ijb_structure(ijb_dir, tmp_path):
  again, other = tmp_path / "again", tmp_path / "other"
  synthetic_ijb.generate_ijb(str(again), num_identities=6, templates_per_identity=3)
  synthetic_ijb.generate_ijb(str(other), num_identities=6, templates_per_identity=3, seed=1)
  assert _digests(ijb_dir) == _digests(again)
  assert _digests(ijb_dir) != _digests(other)
  meta = ijb_meta.read_ijb_meta(str(ijb_dir), "IJBC")
  assert len(np.unique(meta.templates)) == 18
  # Gallery (first template of each identity) x probes; one genuine per probe.
  assert meta.num_pairs == 6 * 12 and int(meta.labels.sum()) == 12
  per_template = {t: len(np.unique(meta.medias[meta.templates == t]))
                  for t in np.unique(meta.templates)}
  assert max(per_template.values()) > 1  # several media in some templates
  assert len(np.unique(meta.medias)) < meta.num_images  # and several frames in some media
  assert np.all((meta.detector_scores >= 0.5) & (meta.detector_scores < 1))
  for name in meta.image_names:
    assert min(cv2.imread(os.path.join(meta.paths.image_dir, name)).shape[:2]) > 112


def test_synthetic_landmarks_align_the_crop_back_to_the_rendered_face(ijb_dir):
  meta = ijb_meta.read_ijb_meta(str(ijb_dir), "IJBC")
  # Image 1 is frame 0 of media 0 of template 0 of identity 0.
  identity = synthetic_faces.sample_identity(
      np.random.default_rng([0, synthetic_ijb._IDENTITY_STREAM, 0]))
  face = synthetic_faces.render(
      identity, np.random.default_rng([0, synthetic_ijb._MEDIA_STREAM, 0, 0, 0]))
  crop = cv2.imread(meta.image_path(0))
  aligned = transform.warp_face(crop, meta.landmarks[0])
  assert np.abs(aligned.astype(int) - face).mean() < 3
  # Negative control: another crop's landmarks on this crop.
  wrong = transform.warp_face(crop, meta.landmarks[3])
  assert np.abs(wrong.astype(int) - face).mean() > 8


def test_data_modules_load_no_tensorflow():
  code = ("import sys; import tfface.data.synthetic.ijb, tfface.data.insightface.ijb_meta; "
          "print([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')])")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "[]"


@pytest.mark.slow
def test_eval_ijb_tool_with_a_keras_backbone(ijb_dir, tmp_path):
  from tfface.models import build_backbone  # pylint: disable=g-import-not-at-top
  model = build_backbone("r18", embedding_size=32, units=(1, 1, 1, 1),
                         widths=(16, 16, 32, 64), stem_width=16)
  model.save(tmp_path / "tiny.keras")
  out_json, roc_dir = tmp_path / "out" / "ijbc.json", tmp_path / "roc"
  proc = run_tool("eval_ijb", f"--model={tmp_path / 'tiny.keras'}", f"--ijb_dir={ijb_dir}",
                  "--target=IJBC", "--batch_size=8", f"--output_json={out_json}",
                  f"--roc_dir={roc_dir}")
  result = json.loads(out_json.read_text())
  assert result["target"] == "IJBC"
  assert (result["num_templates"], result["num_pairs"]) == (18, 72)
  assert list(result["tar_at_far"]) == ["0.0001", "0.001", "0.01", "0.1", "1e-05", "1e-06"]
  # The oracle: one image at a time through the same Keras model.
  embed_one = lambda face: model(face[None].astype(np.float32)).numpy()[0]
  features = ijb_reference.image_features(ijb_reference.aligned_faces(str(ijb_dir), "IJBC"),
                                          embed_one)
  scores, labels, _ = ijb_reference.template_scores(str(ijb_dir), "IJBC", features)
  expected = ijb_reference.tar_at_far(labels, scores)
  one_pair = 1.0 / labels.sum() + 1e-9  # batched convolutions may reorder a near tie
  for far, tar in expected.items():
    assert abs(result["tar_at_far"][str(far)] - tar) <= one_pair, (far, result, expected)
  table = [l for l in proc.stdout.splitlines() if l.startswith(("+", "|"))]
  assert [c.strip() for c in table[1].split("|")[1:-1]] == [
      "Methods", "1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"]
  assert table[3].startswith("| ijbc-IJBC |")
  assert "images/s" in proc.stderr  # progress with its rate
  png = roc_dir / "ijbc_roc.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_table_centres_like_prettytable():
  result = runner.IJBResult("IJBC", "ijbc", 1, 1, 1, 1, {1e-06: 0.8981, 0.0001: 0.96081},
                            0.9, True, True, True, None, None, None)
  assert report.format_table(result).splitlines() == [
      "+-----------+-------+--------+",
      "|  Methods  | 1e-06 | 0.0001 |",
      "+-----------+-------+--------+",
      "| ijbc-IJBC | 89.81 | 96.08  |",
      "+-----------+-------+--------+"]


# --- Bad input: one error naming the file and the line ------------------------------

def _broken_copy(ijb_dir, tmp_path, file_key, edit):
  root = tmp_path / "broken"
  shutil.copytree(ijb_dir, root)
  path = getattr(ijb_meta.ijb_paths(str(root), "IJBC"), file_key)
  with open(path) as f:
    lines = f.read().splitlines()
  edit(lines)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return root, path


def _set(i, text):
  def edit(lines):
    lines[i] = text
  return edit


@pytest.mark.parametrize("file_key,edit,error,message", [
    ("face_tid_mid", _set(2, "3.jpg 1"), ValueError, r"line 3: expected 'IMAGE TEMPLATE_ID"),
    ("face_tid_mid", _set(1, "2.jpg one 1"), ValueError, r"line 2: the template id must be"),
    ("name_5pts_score", _set(4, "5.jpg 1 2 3 4 5 6 7 8 9 x 0.9"), ValueError,
     r"line 5: landmarks and score must be numbers"),
    ("name_5pts_score", _set(0, "1.jpg 1 2 3 4 5 6 7 8 9 10"), ValueError,
     r"line 1: expected 'IMAGE X1 Y1"),
    ("name_5pts_score", _set(3, "4.jpg -1 2 3 4 5 6 7 8 9 10 0.9"), ValueError,
     r"line 4: landmark outside the image"),
    ("template_pair_label", _set(6, "1 x 0"), ValueError, r"line 7: expected 'TEMPLATE_ID"),
    ("template_pair_label", _set(5, "1 2 3"), ValueError, r"line 6: the label must be 0 or 1"),
    ("template_pair_label", _set(8, "1 999 0"), ValueError,
     r"line 9: template 999 has no images in .*ijbc_face_tid_mid.txt"),
    ("name_5pts_score", lambda lines: lines.pop(), ValueError,
     r"ijbc_face_tid_mid.txt: \d+ images, but"),
])
def test_bad_meta_is_one_error_naming_file_and_line(ijb_dir, tmp_path, file_key, edit, error,
                                                    message):
  root, path = _broken_copy(ijb_dir, tmp_path, file_key, edit)
  with pytest.raises(error, match=message) as info:
    ijb_meta.read_ijb_meta(str(root), "IJBC")
  assert os.path.basename(path) in str(info.value) or "face_tid_mid" in str(info.value)
  assert "\n" not in str(info.value)


def test_missing_image_is_named_with_its_line(ijb_dir, tmp_path):
  root, _ = _broken_copy(ijb_dir, tmp_path, "face_tid_mid", lambda lines: None)
  os.remove(root / "loose_crop" / "7.jpg")
  with pytest.raises(OSError, match=r"ijbc_name_5pts_score.txt: line 7: image .*7.jpg "
                                    "does not exist"):
    ijb_meta.read_ijb_meta(str(root), "IJBC")


def test_landmark_outside_the_image_fails_when_the_image_is_decoded(ijb_dir, tmp_path):
  def far_right(lines):
    fields = lines[4].split()
    lines[4] = " ".join([fields[0], "5000"] + fields[2:])
  root, _ = _broken_copy(ijb_dir, tmp_path, "name_5pts_score", far_right)
  meta = ijb_meta.read_ijb_meta(str(root), "IJBC")
  with pytest.raises(ValueError, match=r"ijbc_name_5pts_score.txt: line 5 \(5.jpg\): "
                                       r"landmark 1 at \(5000, [\d.]+\) is outside the \d+x\d+"):
    runner.run_protocol(ijb_reference.PixelModel(), meta, batch_size=4, verbose=False)


@pytest.mark.slow
def test_tool_reports_bad_input_as_one_error_line_before_loading_the_model(ijb_dir, tmp_path):
  root, _ = _broken_copy(ijb_dir, tmp_path, "template_pair_label", _set(2, "1 2"))
  proc = run_tool("eval_ijb", f"--model={tmp_path / 'no_such_model'}", f"--ijb_dir={root}",
                  check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"error: {root}/meta/ijbc_template_pair_label.txt: line 3: expected")


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
    ({"batch_size": -1}, r"batch_size must be a positive integer, got -1"),
    ({"num_threads": 0}, r"num_threads must be a positive integer \(or None"),
    ({"num_threads": -3}, r"num_threads must be a positive integer \(or None"),
])
def test_embed_images_rejects_bad_batch_size_and_threads(ijb_dir, kwargs, message):
  meta = ijb_meta.read_ijb_meta(str(ijb_dir), "IJBC")
  with pytest.raises(ValueError, match=message):
    runner.run_protocol(ijb_reference.PixelModel(), meta, verbose=False, **kwargs)


@pytest.mark.parametrize("flag", ["output_json", "roc_dir"])
def test_unwritable_outputs_fail_before_the_model_loads(ijb_dir, tmp_path, flag, dir_and_file):
  a_dir, a_file = dir_and_file
  bad = {"output_json": a_dir, "roc_dir": a_file}[flag]
  with pytest.raises(ValueError) as info:
    runner.evaluate_ijb(str(tmp_path / "no_model"), str(ijb_dir), **{flag: str(bad)},
                        echo=lambda line: None)
  assert str(info.value).startswith(f"--{flag}={bad}: is a ")
  assert sorted(os.listdir(tmp_path)) == ["a_dir", "a_file"]  # nothing written
  # Below a file, nothing can be created either.
  with pytest.raises(ValueError, match=rf"--{flag}={a_file}/x: .*{a_file} is a file"):
    runner.evaluate_ijb(str(tmp_path / "no_model"), str(ijb_dir), **{flag: f"{a_file}/x"},
                        echo=lambda line: None)


def test_evaluate_ijb_checks_batch_size_before_the_model_loads(ijb_dir, tmp_path):
  with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
    runner.evaluate_ijb(str(tmp_path / "no_model"), str(ijb_dir), batch_size=0,
                        echo=lambda line: None)
