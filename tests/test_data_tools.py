"""The dataset command-line tools, run as a user runs them (subprocesses).

The data tools never import TensorFlow or Keras (Python's own import log,
`PYTHONPROFILEIMPORTTIME`, shows what each run imported); error paths that
need no command-line wiring are checked in-process.
"""
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import REPO
from conftest import TOOLS
from conftest import run_tool
from tfface.data.insightface import conversions
from tfface.data.insightface import rec as insightface_rec
from tfface.data import inspection
from tfface.data.insightface import pairs
from tfface.data.tfrecord import schema
from tfface.data.synthetic import dataset as synthetic
from tfface.data.transcode import transcode
from tfface.data.insightface import verification_bin


# One line of `-X importtime` output for a tensorflow or keras module.
_TF_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(tensorflow|keras)\b", re.M)


def run_data_tool(name, *args, check=True):
  """`run_tool`, asserting from Python's import log that no TensorFlow or Keras loaded."""
  proc = run_tool(name, *args, check=check, env={"PYTHONPROFILEIMPORTTIME": "1"})
  assert "import time:" in proc.stderr  # the log is there to read
  assert not _TF_IMPORT.search(proc.stderr), _TF_IMPORT.search(proc.stderr).group(0)
  proc.stderr = "".join(line for line in proc.stderr.splitlines(keepends=True)
                        if not line.startswith("import time:"))
  return proc


def test_the_data_package_loads_no_tensorflow():
  code = ("import importlib, pkgutil, sys\n"
          "import tfface.atomic, tfface.data, tfface.progress\n"
          "for m in pkgutil.walk_packages(tfface.data.__path__, 'tfface.data.'):\n"
          "  importlib.import_module(m.name)\n"
          "print(sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras')))\n"
          "print(sum(n.startswith('tfface.data.') for n in sys.modules))\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        check=True, cwd=REPO, timeout=120)
  loaded, count = proc.stdout.split("\n")[:2]
  assert loaded == "[]"
  assert int(count) >= 20  # every module was imported (20 today)


def test_make_synthetic_rec2tfrecord_inspect(tmp_path):
  rec, out = tmp_path / "rec", tmp_path / "tfrecords"
  run_data_tool("make_synthetic", f"--output_dir={rec}", "--num_identities=4",
                "--images_per_identity=3", "--num_pairs=20", "--num_val_identities=3")
  proc = run_data_tool("rec2tfrecord", f"--rec_dir={rec}", f"--output_dir={out}",
                       "--num_shards=3", "--num_workers=2")
  assert "12 images of 4 classes in 3 shards, verified" in proc.stdout
  assert "images/s" in proc.stdout and "MB/s" in proc.stdout
  # Captured (not a terminal): plain progress lines with a rate, no redraws.
  assert "\r" not in proc.stderr
  assert re.search(r"^rec2tfrecord: 12/12 records \[.*, [\d.]+ records/s\]$", proc.stderr, re.M)
  assert schema.load_manifest(str(out)).num_images == 12
  # A TFRecord's samples are decoded with TensorFlow: the import log shows it
  # (the positive control of run_data_tool's check).
  proc = run_tool("inspect_data", out, env={"PYTHONPROFILEIMPORTTIME": "1"})
  assert "12 images, 4 classes, 3 shards" in proc.stdout and "image 112x112x3" in proc.stdout
  assert _TF_IMPORT.search(proc.stderr)
  proc = run_data_tool("inspect_data", rec)
  assert "12 images, 4 identities (header + identity records" in proc.stdout
  proc = run_data_tool("inspect_data", rec / "synth_val.bin")
  assert "20 pairs (10 same, 10 different)" in proc.stdout
  proc = run_data_tool("inspect_data", "--verify", out)
  assert "all 3 shards (12 records) match the blake3 digests" in proc.stdout
  shard = schema.load_manifest(str(out)).shard_paths(str(out))[1]
  with open(shard, "r+b") as f:
    f.seek(os.path.getsize(shard) // 2)
    f.write(bytes(200))
  proc = run_data_tool("inspect_data", "--verify", out, check=False)
  assert proc.returncode == 1
  assert re.search(rf"^BAD {shard}: corrupt record at byte offset \d+ \(data CRC mismatch",
                   proc.stdout, re.M)
  assert "1 of 3 shards do not match manifest.json" in proc.stdout
  assert "\r" not in proc.stderr and re.search(r"verify .*B/s\]$", proc.stderr, re.M)


def test_bad_input_exits_1_with_one_line(tmp_path):
  synthetic.generate(str(tmp_path), num_identities=2, images_per_identity=2, num_pairs=20,
                     num_val_identities=2, val_images_per_identity=2)
  with open(tmp_path / "train.rec", "r+b") as f:
    f.seek(0)
    f.write(b"JUNK")
  proc = run_data_tool("rec2tfrecord", f"--rec_dir={tmp_path}",
                       f"--output_dir={tmp_path / 'o'}", check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path}/train.rec: bad magic 0x4b4e554a at byte offset 0")
  (tmp_path / "nothing.txt").write_text("not a dataset")
  with pytest.raises(ValueError, match="nothing.txt: not a .rec directory"):
    inspection.describe(str(tmp_path / "nothing.txt"))


def test_rec2img_then_img2rec_round_trip(tmp_path):
  synthetic.generate(str(tmp_path / "rec"), num_identities=3, images_per_identity=2,
                     num_pairs=20, num_val_identities=2, val_images_per_identity=2)
  proc = run_data_tool("rec2img", f"--rec_dir={tmp_path / 'rec'}",
                       f"--output_dir={tmp_path / 'img'}")
  assert "\r" not in proc.stderr and re.search(r"rec2img: 6/6 images .*images/s", proc.stderr)
  with insightface_rec.InsightFaceRec(str(tmp_path / "rec")) as rec:
    for key, label, image in rec:  # bytes written unchanged: colours stay right
      assert (tmp_path / "img" / str(label) / f"{key}.jpg").read_bytes() == image
  big = np.zeros((120, 100, 3), np.uint8)
  cv2.imwrite(str(tmp_path / "img" / "2" / "extra.png"), big)
  with pytest.raises(ValueError, match="extra.png: image is 100x120, expected 112x112"):
    conversions.images_to_rec(str(tmp_path / "img"), str(tmp_path / "r2"))
  assert not (tmp_path / "r2" / "train.rec").exists()
  run_data_tool("img2rec", f"--image_dir={tmp_path / 'img'}", f"--output_dir={tmp_path / 'r2'}",
                "--resize")
  lst = (tmp_path / "r2" / "train.lst").read_text().splitlines()
  assert lst[0] == f"1\t{tmp_path / 'img' / '0' / '1.jpg'}\t0" and len(lst) == 7
  assert (tmp_path / "r2" / "property").read_text() == "3,112,112"
  with insightface_rec.InsightFaceRec(str(tmp_path / "r2")) as rec:
    assert rec.has_header and rec.labels().tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert rec.read(1)[1] == (tmp_path / "img" / "0" / "1.jpg").read_bytes()
  (tmp_path / "img" / "2" / "broken.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
    conversions.images_to_rec(str(tmp_path / "img"), str(tmp_path / "r3"), resize=True)


def _small_rec(directory):
  """A 9-image InsightFace rec; returns the .idx lines and their byte offsets."""
  synthetic.generate(str(directory), num_identities=3, images_per_identity=3, num_pairs=20,
                     num_val_identities=2, val_images_per_identity=2)
  lines = (directory / "train.idx").read_text().splitlines(keepends=True)
  return lines, [int(line.split()[1]) for line in lines]


def _last_line(proc):
  assert proc.returncode == 1, proc.stdout + proc.stderr
  return proc.stderr.strip().splitlines()[-1]


def test_rec2img_and_inspect_refuse_an_idx_that_does_not_match_the_rec(tmp_path):
  rec, out = tmp_path / "rec", tmp_path / "out"
  lines, offsets = _small_rec(rec)
  idx = rec / "train.idx"
  # key 2 points inside its own record (aligned): found by reading the records
  idx.write_text("".join(lines[:2] + [f"2\t{offsets[2] + 8}\n"] + lines[3:]))
  proc = run_data_tool("rec2img", f"--rec_dir={rec}", f"--output_dir={out}", check=False)
  assert _last_line(proc) == (
      f"error: {idx}: line 3: key 2 at byte offset {offsets[2] + 8} is not where a record "
      f"starts in {rec}/train.rec (the records around it start at {offsets[2]} and "
      f"{offsets[3]})")
  assert sorted(os.listdir(tmp_path)) == ["rec"]  # no output, no temporary
  proc = run_data_tool("rec2tfrecord", f"--rec_dir={rec}", f"--output_dir={tmp_path / 't'}",
                       "--num_workers=2", check=False)
  assert _last_line(proc).startswith(
      f"error: {idx}: line 3: key 2 at byte offset {offsets[2] + 8} is not where a record "
      f"starts in {rec}/train.rec (the records around it start at {offsets[2]} and "
      f"{offsets[3]}); reading there: {rec}/train.rec: bad magic 0x00000000 at byte offset "
      f"{offsets[2] + 8}")
  # the same, unaligned (`99<TAB>12345`): found on opening, by inspect_data too
  idx.write_text("".join(lines[:2] + [f"2\t{offsets[2] + 5}\n"] + lines[3:]))
  for tool in ("rec2img", "inspect_data"):
    args = [f"--rec_dir={rec}", f"--output_dir={out}"] if tool == "rec2img" else [rec]
    proc = run_data_tool(tool, *args, check=False)
    assert _last_line(proc) == (
        f"error: {idx}: line 3: key 2 at byte offset {offsets[2] + 5} is not where a record "
        f"starts in {rec}/train.rec: records start at multiples of 4 bytes")
  # key 5's line deleted: 8 images would be written, not 9
  idx.write_text("".join(lines[:5] + lines[6:]))
  for tool in ("rec2img", "inspect_data"):
    args = [f"--rec_dir={rec}", f"--output_dir={out}"] if tool == "rec2img" else [rec]
    proc = run_data_tool(tool, *args, check=False)
    assert _last_line(proc) == (
        f"error: {idx}: no record with key 5: an image key below the header's first "
        "identity key is missing from the index")
  assert not [n for n in os.listdir(tmp_path) if n.startswith("out")]  # nor a temporary


def test_rec2img_writes_everything_or_nothing(tmp_path):
  rec, out = tmp_path / "rec", tmp_path / "out"
  _, offsets = _small_rec(rec)
  good = (rec / "train.rec").read_bytes()
  # Key 5, a class's middle image (opening reads the first and last ones): 4 were
  # written before it.
  with open(rec / "train.rec", "r+b") as f:
    f.seek(offsets[5])
    f.write(b"JUNK")
  proc = run_data_tool("rec2img", f"--rec_dir={rec}", f"--output_dir={out}", check=False)
  assert _last_line(proc).startswith(
      f"error: {rec}/train.rec: bad magic 0x4b4e554a at byte offset {offsets[5]}")
  assert sorted(os.listdir(tmp_path)) == ["rec"]  # nothing half-written
  out.mkdir()
  (out / "mine.txt").write_text("user file")
  proc = run_data_tool("rec2img", f"--rec_dir={rec}", f"--output_dir={out}", check=False)
  assert _last_line(proc) == (f"error: {out}: already exists and is not empty; pass "
                              "--overwrite to replace it")
  proc = run_data_tool("rec2img", f"--rec_dir={rec}", f"--output_dir={out}", "--overwrite",
                       check=False)
  assert _last_line(proc).startswith(f"error: {rec}/train.rec: bad magic")
  assert os.listdir(out) == ["mine.txt"] and sorted(os.listdir(tmp_path)) == ["out", "rec"]
  (rec / "train.rec").write_bytes(good)
  proc = run_data_tool("rec2img", f"--rec_dir={rec}", f"--output_dir={out}", "--overwrite")
  assert proc.stdout.strip() == f"wrote 9 images under {out}"
  assert sorted(os.listdir(out)) == ["0", "1", "2"]  # replaced whole
  assert sorted(os.listdir(tmp_path)) == ["out", "rec"]


def test_img2rec_writes_everything_or_nothing(tmp_path):
  images, out = tmp_path / "img", tmp_path / "out"
  for person in ("ann", "bob"):
    (images / person).mkdir(parents=True)
    cv2.imwrite(str(images / person / "1.jpg"), np.full((112, 112, 3), 90, np.uint8))
  (images / "bob" / "2.jpg").write_bytes(b"not a jpeg")
  proc = run_data_tool("img2rec", f"--image_dir={images}", f"--output_dir={out}", check=False)
  assert _last_line(proc) == (f"error: {images / 'bob' / '2.jpg'}: not a readable image "
                              "(10 bytes)")
  assert sorted(os.listdir(tmp_path)) == ["img"]  # not even an empty directory
  out.mkdir()
  (out / "lfw.bin").write_bytes(b"kept")
  proc = run_data_tool("img2rec", f"--image_dir={images}", f"--output_dir={out}", check=False)
  assert _last_line(proc) == (f"error: {out}: already exists and is not empty; pass "
                              "--overwrite to replace it")
  (images / "bob" / "2.jpg").unlink()
  run_data_tool("img2rec", f"--image_dir={images}", f"--output_dir={out}", "--overwrite")
  # its four files replace theirs; the rest of the directory stays
  assert sorted(os.listdir(out)) == ["lfw.bin", "property", "train.idx", "train.lst",
                                     "train.rec"]
  assert (out / "lfw.bin").read_bytes() == b"kept"
  assert sorted(os.listdir(tmp_path)) == ["img", "out"]


def test_make_synthetic_refuses_a_directory_that_holds_a_dataset(tmp_path):
  out = tmp_path / "faces_emore"
  out.mkdir()
  (out / "train.rec").write_bytes(b"a real dataset")
  (out / "lfw.bin").write_bytes(b"kept")
  small = ("--num_identities=2", "--images_per_identity=2", "--num_pairs=20",
           "--num_val_identities=2")
  proc = run_data_tool("make_synthetic", f"--output_dir={out}", *small, check=False)
  assert proc.returncode != 0
  assert _last_line(proc) == (f"error: {out}: already exists and is not empty; pass "
                              "--overwrite to replace it")
  assert (out / "train.rec").read_bytes() == b"a real dataset"  # untouched
  assert sorted(os.listdir(tmp_path)) == ["faces_emore"]  # no temporary left
  run_data_tool("make_synthetic", f"--output_dir={out}", *small, "--overwrite")
  # its four files replace theirs; the rest of the directory stays
  assert sorted(os.listdir(out)) == ["lfw.bin", "property", "synth_val.bin", "train.idx",
                                     "train.rec"]
  assert (out / "lfw.bin").read_bytes() == b"kept"
  synthetic.generate(str(tmp_path / "fresh"), num_identities=2, images_per_identity=2,
                     num_pairs=20, num_val_identities=2)
  for name in ("property", "synth_val.bin", "train.idx", "train.rec"):
    assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
  assert sorted(os.listdir(tmp_path)) == ["faces_emore", "fresh"]


def test_inspect_data_names_a_path_that_does_not_exist(tmp_path):
  proc = run_data_tool("inspect_data", tmp_path / "nope", check=False)
  assert _last_line(proc) == f"error: {tmp_path / 'nope'}: no such file or directory"
  with pytest.raises(FileNotFoundError, match="nope.rec: no such file or directory"):
    inspection.describe(str(tmp_path / "nope.rec"))
  # No path, or two: one line (absl's usage error printed the whole help).
  for args in ((), (tmp_path, tmp_path)):
    proc = run_data_tool("inspect_data", *args, check=False)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert proc.stderr.strip().splitlines() == [
        "error: expected one PATH (a .rec dir, a TFRecord dir or a .bin); usage: "
        "inspect_data.py [--verify] PATH"], proc.stderr


def test_make_bin_from_lfw_pairs_and_plain_pairs(tmp_path):
  for name, count in (("Ann_A", 2), ("Bob_B", 1)):
    os.makedirs(tmp_path / "lfw" / name)
    for i in range(1, count + 1):
      cv2.imwrite(str(tmp_path / "lfw" / name / f"{name}_{i:04d}.jpg"),
                  np.full((112, 112, 3), 40 * i, np.uint8))
  # The tool needs a pair per fold of InsightFace's 10-fold protocol.
  (tmp_path / "pairs.txt").write_text("1\t10\n" + "Ann_A\t1\t2\nAnn_A\t1\tBob_B\t1\n" * 5)
  run_data_tool("make_bin", f"--pairs={tmp_path / 'pairs.txt'}",
                f"--image_root={tmp_path / 'lfw'}", f"--output={tmp_path / 'lfw.bin'}")
  vbin = verification_bin.load_bin(str(tmp_path / "lfw.bin"))
  ann1 = (tmp_path / "lfw" / "Ann_A" / "Ann_A_0001.jpg").read_bytes()
  assert vbin.issame.tolist() == [True, False] * 5 and vbin.images[0] == ann1
  assert vbin.images[3] == (tmp_path / "lfw" / "Bob_B" / "Bob_B_0001.jpg").read_bytes()
  (tmp_path / "plain.txt").write_text("Ann_A/Ann_A_0001.jpg Bob_B/Bob_B_0001.jpg 0\n"
                                      "Ann_A/Ann_A_0002.jpg Ann_A/Ann_A_0009.jpg 1\n")
  with pytest.raises(ValueError, match="plain.txt: pair 2: image .*Ann_A_0009.jpg does not"):
    pairs.build_bin(str(tmp_path / "plain.txt"), str(tmp_path / "lfw"), str(tmp_path / "p.bin"))
  assert not (tmp_path / "p.bin").exists()
  (tmp_path / "plain.txt").write_text("Ann_A/Ann_A_0001.jpg Bob_B/Bob_B_0001.jpg 0\n")
  vbin = pairs.build_bin(str(tmp_path / "plain.txt"), str(tmp_path / "lfw"),
                         str(tmp_path / "p.bin"))
  assert vbin.issame.tolist() == [False] and vbin.images[0] == ann1


@pytest.mark.slow
def test_rec2tfrecord_killed_then_rerun_matches_an_uninterrupted_run(tmp_path):
  synthetic.generate(str(tmp_path / "rec"), num_identities=6, images_per_identity=8,
                     num_pairs=20, num_val_identities=2, val_images_per_identity=2)
  args = [sys.executable, str(TOOLS / "rec2tfrecord.py"), f"--rec_dir={tmp_path / 'rec'}",
          "--num_shards=48", "--num_workers=1", "--quiet"]
  proc = subprocess.Popen(args + [f"--output_dir={tmp_path / 'killed'}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  state = tmp_path / "killed" / transcode.STATE_DIR
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline:
    if state.exists() and len([n for n in os.listdir(state) if n.endswith(".json")]) >= 4:
      proc.send_signal(signal.SIGKILL)  # mid-run: some shards done, one maybe half-written
      break
    time.sleep(0.005)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "finished before it could be killed"
  assert not (tmp_path / "killed" / schema.MANIFEST_NAME).exists()
  resumed = run_tool("rec2tfrecord", f"--rec_dir={tmp_path / 'rec'}",
                     f"--output_dir={tmp_path / 'killed'}", "--num_shards=48", "--quiet")
  assert "kept" in resumed.stdout and "(kept 0)" not in resumed.stdout
  fresh = transcode.transcode(str(tmp_path / "rec"), str(tmp_path / "fresh"), num_shards=48)
  assert schema.load_manifest(str(tmp_path / "killed")) == fresh.manifest
  assert sorted(os.listdir(tmp_path / "killed")) == sorted(os.listdir(tmp_path / "fresh"))
