"""Files appear whole or not at all (`tfface.atomic`)."""
import json
import os
import pathlib

import pytest

from tfface import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "out.json"
  atomic.write_json(path, {"a": 1}, indent=2)
  assert json.loads(path.read_text()) == {"a": 1}
  with pytest.raises(RuntimeError):
    with atomic.replacing(path) as tmp, open(tmp, "w") as f:
      f.write('{"a": 2, "trunc')
      raise RuntimeError("crash mid-write")
  assert json.loads(path.read_text()) == {"a": 1}
  assert os.listdir(tmp_path) == ["out.json"]


def test_suffix_and_directories(tmp_path):
  path = tmp_path / "new" / "deeper" / "model.keras"
  with atomic.replacing(path, suffix=".keras", make_dirs=True) as tmp:
    assert tmp.endswith(".keras") and os.path.dirname(tmp) == os.path.dirname(path)
    with open(tmp, "wb") as f:
      f.write(b"weights")
  assert path.read_bytes() == b"weights"
  atomic.write_bytes(path, memoryview(b"other"), sync=True)
  assert path.read_bytes() == b"other"
  assert os.listdir(path.parent) == ["model.keras"]


class _Writer(atomic.CommitOnSuccess):

  def __init__(self):
    self.state = "open"

  def close(self):
    self.state = "committed"

  def abort(self):
    self.state = "aborted"


def test_writers_commit_on_success_and_abort_on_error():
  with _Writer() as ok:
    pass
  assert ok.state == "committed"
  bad = _Writer()
  with pytest.raises(KeyError):
    with bad:
      raise KeyError("bad record")
  assert bad.state == "aborted"


def test_a_directory_appears_whole_or_not_at_all(tmp_path):
  out = tmp_path / "out"
  with pytest.raises(RuntimeError):
    with atomic.replacing_dir(out) as tmp:
      assert os.path.dirname(tmp) == str(tmp_path)  # beside it: renamed, not copied
      (pathlib.Path(tmp) / "0").mkdir()
      (pathlib.Path(tmp) / "0" / "1.jpg").write_bytes(b"half")
      raise RuntimeError("bad record")
  assert os.listdir(tmp_path) == []
  with atomic.replacing_dir(str(out) + "/") as tmp:
    (pathlib.Path(tmp) / "a").write_text("new")
  assert os.listdir(tmp_path) == ["out"] and (out / "a").read_text() == "new"


def test_an_existing_directory_is_refused_or_replaced_only_on_success(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "mine.txt").write_text("user file")
  with pytest.raises(ValueError, match=f"{out}: already exists and is not empty; pass "
                     "--overwrite"):
    with atomic.replacing_dir(out):
      pytest.fail("the block must not run")
  for merge in (False, True):
    with pytest.raises(RuntimeError):
      with atomic.replacing_dir(out, overwrite=True, merge=merge) as tmp:
        (pathlib.Path(tmp) / "a").write_text("new")
        raise RuntimeError("bad record")
    assert os.listdir(out) == ["mine.txt"] and os.listdir(tmp_path) == ["out"]
  with atomic.replacing_dir(out, overwrite=True, merge=True) as tmp:
    (pathlib.Path(tmp) / "a").write_text("new")
  assert sorted(os.listdir(out)) == ["a", "mine.txt"]
  with atomic.replacing_dir(out, overwrite=True) as tmp:
    (pathlib.Path(tmp) / "b").write_text("new")
  assert os.listdir(out) == ["b"] and os.listdir(tmp_path) == ["out"]
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="file: exists and is not a directory"):
    with atomic.replacing_dir(tmp_path / "file", overwrite=True):
      pass
  empty = tmp_path / "empty"
  empty.mkdir()
  with atomic.replacing_dir(empty) as tmp:
    (pathlib.Path(tmp) / "c").write_text("new")
  assert os.listdir(empty) == ["c"]
