"""InsightFace verification `.bin` files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

A `.bin` is a pickle of `(bins, issame_list)`: `bins` holds 2N encoded images
(bytes, or uint8 numpy arrays as returned by `cv2.imencode`), pair i is
`bins[2i], bins[2i+1]`, and `issame_list` holds N booleans. Many were written
by Python 2, so they are read with `encoding="bytes"`.

Pickles can run arbitrary code when loaded, and `.bin` files are downloaded
from file-sharing sites, so they are read through `SafeBinUnpickler`, which
only resolves the handful of globals that numpy arrays and Python 3 protocol-2
bytes need, then the loaded structure is checked element by element.
"""
import dataclasses
import io
import os
import pickle

import numpy as np

from tfface import atomic

# Globals a legitimate .bin may reference: numpy array reconstruction (numpy 1
# and numpy 2 module paths) and the helpers protocol-2 pickles use for bytes.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("__builtin__", "bytes"),
    ("__builtin__", "bytearray"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
})


class UnsafeBinError(pickle.UnpicklingError):
  """A `.bin` referenced something other than plain containers and numpy arrays."""


class SafeBinUnpickler(pickle.Unpickler):
  """Unpickler that refuses every global outside `_ALLOWED_GLOBALS`."""

  def __init__(self, file, path="<bin>", **kwargs):
    super().__init__(file, **kwargs)
    self._path = path

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      if module in ("copy_reg", "copyreg"):
        module = "copyreg"
      if module == "__builtin__":
        module = "builtins"
      return super().find_class(module, name)
    raise UnsafeBinError(
        f"{self._path}: refusing to load: the pickle references {module}.{name}, "
        "which a verification .bin never needs (only lists, tuples, bytes, bools "
        "and uint8 numpy arrays are accepted)")


@dataclasses.dataclass
class VerificationBin:
  """A loaded `.bin`: `images[2i]`, `images[2i+1]` form pair i; `issame[i]` is its truth."""

  images: list[bytes]
  issame: np.ndarray
  path: str = ""

  @property
  def num_pairs(self) -> int:
    return len(self.issame)

  @property
  def name(self) -> str:
    """The target name InsightFace prints: the file's stem (`lfw`, `cfp_fp`)."""
    return os.path.splitext(os.path.basename(self.path))[0]


def check_pair_count(path: str, num_pairs: int, folds: int, consequence: str = ""):
  """Raises ValueError, naming `path`, when `num_pairs` cannot give each of `folds` a pair.

  InsightFace's verification protocol splits the pairs into folds (10); a
  fold without a pair has no accuracy. `consequence` is appended to the
  message (what the caller could then not do).
  """
  if num_pairs < folds:
    raise ValueError(f"{path}: {num_pairs} pairs, but InsightFace's {folds}-fold protocol "
                     f"needs at least {folds} (one pair per fold){consequence}")


def _as_bytes(item, index, path):
  if isinstance(item, (bytes, bytearray)):
    return bytes(item)
  if isinstance(item, np.ndarray):
    if item.dtype != np.uint8:
      raise ValueError(f"{path}: image {index} is a numpy array of dtype {item.dtype}, "
                       "expected uint8 encoded bytes")
    return item.reshape(-1).tobytes()
  raise ValueError(f"{path}: image {index} is a {type(item).__name__}, "
                   "expected bytes or a uint8 numpy array")


def loads_bin(data: bytes, path: str = "<bytes>") -> VerificationBin:
  """Parses the bytes of a `.bin` file safely. See `load_bin`."""
  try:
    obj = SafeBinUnpickler(io.BytesIO(data), path=path, encoding="bytes").load()
  except UnsafeBinError:
    raise
  except Exception as e:  # truncated or corrupt pickles raise many types
    raise ValueError(f"{path}: not a readable verification .bin pickle ({e!r})") from e
  if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
    raise ValueError(f"{path}: expected a pickled (bins, issame_list) pair, "
                     f"got {type(obj).__name__}")
  bins, issame = obj
  if not isinstance(bins, (list, tuple)):
    raise ValueError(f"{path}: bins is a {type(bins).__name__}, expected a list")
  images = [_as_bytes(b, i, path) for i, b in enumerate(bins)]
  issame_list = list(issame) if isinstance(issame, (list, tuple, np.ndarray)) else None
  if issame_list is None or not all(isinstance(v, (bool, np.bool_, int, np.integer))
                                    for v in issame_list):
    raise ValueError(f"{path}: issame_list must be a list of booleans")
  if len(images) != 2 * len(issame_list):
    raise ValueError(f"{path}: {len(images)} images for {len(issame_list)} pairs; "
                     "expected exactly two images per pair")
  return VerificationBin(images, np.asarray(issame_list, dtype=bool), path)


def load_bin(path: str) -> VerificationBin:
  """Loads an InsightFace verification `.bin` without executing code from it.

  Args:
    path: the `.bin` file.

  Returns:
    A `VerificationBin` with the encoded images as bytes and `issame` as bools.

  Raises:
    UnsafeBinError: the pickle references anything but the expected types.
    ValueError: the file is not a well-formed `(bins, issame_list)` pickle.
    FileNotFoundError: there is no such file.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: no such verification .bin file") from None
  return loads_bin(data, path)


def write_bin(path: str, images, issame, protocol: int = 4) -> None:
  """Writes a `.bin` as InsightFace does: pickle of `(list of bytes, list of bools)`.

  The file is written under a temporary name and renamed, so a crash never
  leaves a truncated `.bin` behind.
  """
  images = [bytes(b) for b in images]
  issame = [bool(v) for v in issame]
  if len(images) != 2 * len(issame):
    raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs")
  with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
    pickle.dump((images, issame), f, protocol=protocol)
