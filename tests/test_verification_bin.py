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
