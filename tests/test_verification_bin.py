"""Verification `.bin` files: both element forms, Python 2 pickles, refusing code."""
import os
import pickle

import cv2
import numpy as np
import pytest

from tfface.data.insightface import verification_bin


def _jpeg(value):
  return cv2.imencode(".jpg", np.full((112, 112, 3), value, np.uint8))[1]


def test_round_trip(tmp_path):
  images = [_jpeg(v).tobytes() for v in (10, 20, 30, 40)]
  path = str(tmp_path / "x.bin")
  verification_bin.write_bin(path, images, [True, False])
  vbin = verification_bin.load_bin(path)
  assert vbin.images == images and vbin.issame.tolist() == [True, False]
  assert (vbin.num_pairs, vbin.name) == (2, "x")


def test_numpy_array_elements_as_cv2_imencode_returns(tmp_path):
  arrays = [_jpeg(v) for v in (1, 2)]
  path = tmp_path / "np.bin"
  path.write_bytes(pickle.dumps((arrays, [True]), protocol=2))
  vbin = verification_bin.load_bin(str(path))
  assert vbin.images == [a.tobytes() for a in arrays]


def test_python2_protocol2_pickle_of_str_loads_as_bytes():
  # What Python 2's pickle.dump(([b'\xff\xd8ab', b'cd'], [True]), f, 2) writes:
  # SHORT_BINSTRING opcodes, which only encoding='bytes' turns into bytes.
  data = (b"\x80\x02]q\x00(U\x04\xff\xd8abq\x01U\x02cdq\x02e]q\x03\x88a\x86q\x04.")
  vbin = verification_bin.loads_bin(data, "py2.bin")
  assert vbin.images == [b"\xff\xd8ab", b"cd"] and vbin.issame.tolist() == [True]


class _Exploit:
  def __reduce__(self):
    import os  # pylint: disable=import-outside-toplevel
    return (os.system, ("touch /tmp/tfface_pwned_by_bin",))


def test_refuses_a_pickle_that_would_run_code(tmp_path):
  data = pickle.dumps(([_Exploit(), b"x"], [True]), protocol=2)
  with pytest.raises(verification_bin.UnsafeBinError, match=r"evil.bin: .*os\.system|posix\.system"):
    verification_bin.loads_bin(data, "evil.bin")
  assert not os.path.exists("/tmp/tfface_pwned_by_bin")


@pytest.mark.parametrize("obj, match", [
    ({"a": 1}, "expected a pickled \\(bins, issame_list\\) pair"),
    (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
    (([b"a", 5], [True]), "image 1 is a int"),
    (([b"a", b"b"], ["yes"]), "issame_list must be a list of booleans"),
])
def test_malformed_bins(obj, match):
  with pytest.raises(ValueError, match=match):
    verification_bin.loads_bin(pickle.dumps(obj, protocol=4), "bad.bin")


def test_truncated_pickle_is_a_value_error():
  data = pickle.dumps(([b"a", b"b"], [True]))
  with pytest.raises(ValueError, match="short.bin: not a readable"):
    verification_bin.loads_bin(data[:-5], "short.bin")


def _faces_and_pairs(tmp_path, num_pairs):
  for i in range(2):
    cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((112, 112, 3), 40 * (i + 1), np.uint8))
  pairs_file = tmp_path / "pairs.txt"
  pairs_file.write_text("".join(f"0.jpg {i % 2}.jpg {1 - i % 2}\n" for i in range(num_pairs)))
  return pairs_file


def test_make_bin_refuses_fewer_pairs_than_the_protocol_has_folds(tmp_path):
  from conftest import run_tool  # pylint: disable=import-outside-toplevel
  from tfface.data.insightface import pairs  # pylint: disable=import-outside-toplevel
  pairs_file = _faces_and_pairs(tmp_path, 2)
  proc = run_tool("make_bin", f"--pairs={pairs_file}", f"--image_root={tmp_path}",
                  f"--output={tmp_path / 'small.bin'}", check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      f"error: {pairs_file}: 2 pairs, but InsightFace's 10-fold protocol needs at least 10 "
      "(one pair per fold), so tools/verify.py could not evaluate the .bin"]
  assert not (tmp_path / "small.bin").exists()
  with pytest.raises(ValueError, match=rf"^{pairs_file}: 2 pairs, but"):
    pairs.build_bin(str(pairs_file), str(tmp_path), str(tmp_path / "small.bin"), min_pairs=10)
  # Ten pairs are enough.
  pairs_file = _faces_and_pairs(tmp_path, 10)
  proc = run_tool("make_bin", f"--pairs={pairs_file}", f"--image_root={tmp_path}",
                  f"--output={tmp_path / 'ten.bin'}")
  assert verification_bin.load_bin(str(tmp_path / "ten.bin")).num_pairs == 10


def test_make_bin_checks_its_output_before_reading_images(tmp_path):
  from conftest import run_tool  # pylint: disable=import-outside-toplevel
  pairs_file = _faces_and_pairs(tmp_path, 10)
  (tmp_path / "out.bin").mkdir()
  proc = run_tool("make_bin", f"--pairs={pairs_file}", f"--image_root={tmp_path / 'none'}",
                  f"--output={tmp_path / 'out.bin'}", check=False)
  assert proc.stderr.strip().splitlines() == [
      f"error: --output={tmp_path / 'out.bin'}: is a directory; expected a file name"]
