"""Files appear whole or not at all (`tfface.atomic`)."""
import json
import os

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
