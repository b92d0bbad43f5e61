"""Verification pair lists (`pairs.txt`) and building `.bin` files from them.

Two forms are read:

* LFW `pairs.txt`: an optional first line `sets<TAB>pairs_per_set`, then
  `name<TAB>n1<TAB>n2` (same person) or `name1<TAB>n1<TAB>name2<TAB>n2`
  (different people); image `n` of `name` is `name/name_000n.jpg`.
* Plain: `path1 path2 1|0` per line (1 = same), paths relative to the root.
"""
import os

import numpy as np

from tfface import progress as progress_lib
from tfface.data.insightface import conversions
from tfface.data.insightface import verification_bin


def _lfw_path(root: str, name: str, number: str) -> str:
  stem = os.path.join(root, name, f"{name}_{int(number):04d}")
  for extension in (".jpg", ".png", ".jpeg"):
    if os.path.exists(stem + extension):
      return stem + extension
  return stem + ".jpg"


def read_pairs(pairs_path: str, image_root: str) -> list[tuple[str, str, bool]]:
  """Parses a pairs file into `(path1, path2, issame)` triples.

  Raises:
    FileNotFoundError: no such pairs file.
    ValueError: a line in neither form, named by its line number.
  """
  pairs = []
  if not os.path.isfile(pairs_path):
    raise FileNotFoundError(f"{pairs_path}: no such pairs file")
  with open(pairs_path) as f:
    lines = f.read().splitlines()
  for lineno, line in enumerate(lines, 1):
    fields = line.split()
    if not fields:
      continue
    if lineno == 1 and len(fields) == 2 and all(v.isdigit() for v in fields):
      continue  # LFW header: number of sets, pairs per set
    try:
      if len(fields) == 3 and fields[2] in ("0", "1") and not fields[1].isdigit():
        pairs.append((os.path.join(image_root, fields[0]),
                      os.path.join(image_root, fields[1]), fields[2] == "1"))
      elif len(fields) == 3:
        name, a, b = fields
        pairs.append((_lfw_path(image_root, name, a), _lfw_path(image_root, name, b), True))
      elif len(fields) == 4:
        name_a, a, name_b, b = fields
        pairs.append((_lfw_path(image_root, name_a, a), _lfw_path(image_root, name_b, b),
                      False))
      else:
        raise ValueError
    except ValueError:
      raise ValueError(f"{pairs_path}: line {lineno}: expected 'name n1 n2', "
                       f"'name1 n1 name2 n2' or 'path1 path2 0|1', got {line!r}") from None
  if not pairs:
    raise ValueError(f"{pairs_path}: no pairs")
  return pairs


def build_bin(pairs_path: str, image_root: str, output: str, size=(112, 112),
              resize: bool = False, progress: bool = False,
              min_pairs: int = 1) -> verification_bin.VerificationBin:
  """Builds an InsightFace verification `.bin` from a pairs file and images.

  Images are stored as their file bytes (as InsightFace's packing scripts
  do) when they already are `size`, else resized and re-encoded (JPEG q95)
  if `resize`, else refused. `progress` shows pairs done, rate and ETA on
  stderr. `min_pairs` refuses a shorter pairs file before any image is read
  (`tools/make_bin.py` asks for InsightFace's 10 folds: one pair each).

  Returns:
    The `VerificationBin` that was written.

  Raises:
    ValueError: a missing or unreadable image, named with its pairs line, or
      fewer than `min_pairs` pairs.
  """
  pairs = read_pairs(pairs_path, image_root)
  verification_bin.check_pair_count(pairs_path, len(pairs), min_pairs,
                                    ", so tools/verify.py could not evaluate the .bin")
  cache: dict[str, bytes] = {}
  images, issame = [], []
  for i, (path_a, path_b, same) in enumerate(progress_lib.progress(
      pairs, desc="make_bin", unit="pairs", disable=not progress)):
    for path in (path_a, path_b):
      if path not in cache:
        if not os.path.exists(path):
          raise ValueError(f"{pairs_path}: pair {i + 1}: image {path} does not exist")
        cache[path] = conversions.load_face_image(path, size, resize)
      images.append(cache[path])
    issame.append(same)
  verification_bin.write_bin(output, images, issame)
  return verification_bin.VerificationBin(images, np.asarray(issame), output)
