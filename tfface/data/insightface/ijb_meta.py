"""InsightFace's IJB-B / IJB-C layout: loose crops and three meta files.

  DIR/loose_crop/NAME.jpg
  DIR/meta/ijbc_face_tid_mid.txt          NAME TEMPLATE_ID MEDIA_ID
  DIR/meta/ijbc_name_5pts_score.txt       NAME X1 Y1 ... X5 Y5 DETECTOR_SCORE
  DIR/meta/ijbc_template_pair_label.txt   TEMPLATE_ID TEMPLATE_ID LABEL

(`ijbb_*` for IJB-B). Fields are separated by spaces; the landmarks are,
in this order, left eye, right eye, nose, left and right mouth corner in
pixels of the loose crop; LABEL is 1 for a genuine (same person) pair.
InsightFace's `eval_ijbc.py` pairs the rows of the two per-image files by
position, so `read_ijb_meta` insists that they list the same images in the
same order. Every problem is reported as `FILE: line N: ...`.

IJB-C's pair file has 15,658,489 lines: it is parsed by numpy's C reader
(`np.loadtxt`, about 1.5 s) and only re-read line by line to locate an error.
"""
import dataclasses
import os

import numpy as np

from tfface import atomic

TARGETS = ("IJBB", "IJBC")
IMAGE_DIR = "loose_crop"
META_DIR = "meta"
NUM_LANDMARKS = 5


@dataclasses.dataclass(frozen=True)
class IJBPaths:
  """Where the files of one target live."""

  root: str
  target: str
  image_dir: str
  face_tid_mid: str
  name_5pts_score: str
  template_pair_label: str


def ijb_paths(ijb_dir: str, target: str) -> IJBPaths:
  """The file names of `target` ("IJBB" or "IJBC") under `ijb_dir`.

  Raises:
    ValueError: an unknown target.
  """
  if target not in TARGETS:
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
  meta = os.path.join(ijb_dir, META_DIR)
  prefix = os.path.join(meta, target.lower())
  return IJBPaths(root=ijb_dir, target=target, image_dir=os.path.join(ijb_dir, IMAGE_DIR),
                  face_tid_mid=f"{prefix}_face_tid_mid.txt",
                  name_5pts_score=f"{prefix}_name_5pts_score.txt",
                  template_pair_label=f"{prefix}_template_pair_label.txt")


@dataclasses.dataclass
class IJBMeta:
  """Everything the meta files say, one row per image and per pair.

  Attributes:
    paths: the `IJBPaths` read.
    image_names: [n] file names relative to `paths.image_dir`.
    lines: [n] line numbers of the images in both per-image files.
    templates: int64 [n] template id of each image.
    medias: int64 [n] media id of each image.
    landmarks: float32 [n, 5, 2] (x, y), as InsightFace parses them.
    detector_scores: float32 [n].
    pairs: int64 [P, 2] template ids.
    labels: int8 [P], 1 = genuine.
  """

  paths: IJBPaths
  image_names: list
  lines: np.ndarray
  templates: np.ndarray
  medias: np.ndarray
  landmarks: np.ndarray
  detector_scores: np.ndarray
  pairs: np.ndarray
  labels: np.ndarray

  @property
  def num_images(self) -> int:
    return len(self.image_names)

  @property
  def num_pairs(self) -> int:
    return len(self.labels)

  def image_path(self, index: int) -> str:
    return os.path.join(self.paths.image_dir, self.image_names[index])

  def where(self, index: int) -> str:
    """`FILE: line N (NAME)` of image `index`, for error messages."""
    return (f"{self.paths.name_5pts_score}: line {self.lines[index]} "
            f"({self.image_names[index]})")


def _numbered_lines(path):
  """(line number, fields) of each non-blank line; OSError names the file."""
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      fields = line.split()
      if fields:
        yield lineno, fields


def _int_field(path, lineno, fields, i, what):
  try:
    return int(fields[i])
  except ValueError:
    raise ValueError(f"{path}: line {lineno}: {what} must be an integer, got "
                     f"{fields[i]!r}") from None


def read_face_tid_mid(path):
  """`(names, templates, medias, lines)` from a `*_face_tid_mid.txt` file.

  Raises:
    ValueError: a line without exactly 3 fields or with non-integer ids.
    OSError: the file cannot be read.
  """
  names, templates, medias, lines = [], [], [], []
  for lineno, fields in _numbered_lines(path):
    if len(fields) != 3:
      raise ValueError(f"{path}: line {lineno}: expected 'IMAGE TEMPLATE_ID MEDIA_ID' "
                       f"(3 fields), got {len(fields)}: {' '.join(fields)!r}")
    names.append(fields[0])
    templates.append(_int_field(path, lineno, fields, 1, "the template id"))
    medias.append(_int_field(path, lineno, fields, 2, "the media id"))
    lines.append(lineno)
  return (names, np.array(templates, np.int64), np.array(medias, np.int64),
          np.array(lines, np.int64))


def read_name_5pts_score(path):
  """`(names, landmarks [n, 5, 2] float32, scores [n] float32, lines)`.

  Raises:
    ValueError: a line without 12 fields, a non-number, a NaN or infinity,
      or a negative coordinate.
    OSError: the file cannot be read.
  """
  names, values, lines = [], [], []
  expected = 2 + 2 * NUM_LANDMARKS
  for lineno, fields in _numbered_lines(path):
    if len(fields) != expected:
      raise ValueError(f"{path}: line {lineno}: expected 'IMAGE X1 Y1 ... X5 Y5 SCORE' "
                       f"({expected} fields), got {len(fields)}")
    try:
      row = [float(v) for v in fields[1:]]
    except ValueError:
      raise ValueError(f"{path}: line {lineno}: landmarks and score must be numbers, "
                       f"got {' '.join(fields[1:])!r}") from None
    if not np.all(np.isfinite(row)):
      raise ValueError(f"{path}: line {lineno}: NaN or infinite value in {fields[1:]}")
    if min(row[:-1]) < 0:
      raise ValueError(f"{path}: line {lineno}: landmark outside the image (negative "
                       f"coordinate) in {' '.join(fields[1:-1])}")
    names.append(fields[0])
    values.append(row)
    lines.append(lineno)
  # float32, as InsightFace parses them: the aligned pixels follow from these.
  values = np.array(values, np.float32).reshape(-1, expected - 1)
  return (names, values[:, :-1].reshape(-1, NUM_LANDMARKS, 2), values[:, -1].copy(),
          np.array(lines, np.int64))


def _pair_line_error(path, bad_row=None):
  """The first malformed line of a pair file (or row `bad_row`), as a ValueError."""
  row = -1
  for lineno, fields in _numbered_lines(path):
    row += 1
    if len(fields) != 3 or not all(f.lstrip("-").isdigit() for f in fields):
      return ValueError(f"{path}: line {lineno}: expected 'TEMPLATE_ID TEMPLATE_ID LABEL' "
                        f"(3 integers), got {' '.join(fields)!r}")
    if row == bad_row:
      return ValueError(f"{path}: line {lineno}: the label must be 0 or 1, got {fields[2]}")
  return ValueError(f"{path}: not a pair file (expected 'TEMPLATE_ID TEMPLATE_ID LABEL' lines)")


def read_template_pair_label(path):
  """`(pairs int64 [P, 2], labels int8 [P])` from a `*_template_pair_label.txt`.

  Raises:
    ValueError: a line that is not 3 integers, or a label other than 0/1.
    OSError: the file cannot be read.
  """
  if not os.path.isfile(path):
    raise OSError(f"{path}: no such file")
  try:
    table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
  except ValueError:
    raise _pair_line_error(path) from None
  if table.size == 0 or table.shape[1] != 3:
    raise _pair_line_error(path)
  bad = np.flatnonzero((table[:, 2] != 0) & (table[:, 2] != 1))
  if len(bad):
    raise _pair_line_error(path, bad_row=int(bad[0]))
  return np.ascontiguousarray(table[:, :2]), table[:, 2].astype(np.int8)


def _check_same_images(paths, names_tid, lines_tid, names_5pts, lines_5pts):
  for i, (a, b) in enumerate(zip(names_tid, names_5pts)):
    if a != b:
      raise ValueError(f"{paths.name_5pts_score}: line {lines_5pts[i]}: image {b!r}, but "
                       f"line {lines_tid[i]} of {paths.face_tid_mid} has {a!r}: the two "
                       "files must list the same images in the same order")
  if len(names_tid) != len(names_5pts):
    longer, n = ((paths.face_tid_mid, len(names_tid)) if len(names_tid) > len(names_5pts)
                 else (paths.name_5pts_score, len(names_5pts)))
    raise ValueError(f"{longer}: {n} images, but {paths.face_tid_mid} has {len(names_tid)} "
                     f"and {paths.name_5pts_score} has {len(names_5pts)}")


def _check_images_exist(paths, names, lines):
  try:
    present = {e.name for e in os.scandir(paths.image_dir) if e.is_file()}
  except OSError as e:
    raise OSError(f"{paths.image_dir}: cannot list the loose crops ({e.strerror})") from None
  for name, lineno in zip(names, lines):
    if name not in present and not os.path.isfile(os.path.join(paths.image_dir, name)):
      raise OSError(f"{paths.name_5pts_score}: line {lineno}: image "
                    f"{os.path.join(paths.image_dir, name)} does not exist")


def _line_of_row(path, row):
  """The line number of the `row`-th (0-based) non-blank line of `path`."""
  for i, (lineno, _) in enumerate(_numbered_lines(path)):
    if i == row:
      return lineno
  return row + 1


def _check_pair_templates(paths, pairs, labels, templates):
  missing = ~np.isin(pairs, np.unique(templates))
  if missing.any():
    row, col = np.argwhere(missing)[0]
    lineno = _line_of_row(paths.template_pair_label, row)
    raise ValueError(f"{paths.template_pair_label}: line {lineno}: template "
                     f"{pairs[row, col]} has no images in {paths.face_tid_mid}")
  if labels.all() or not labels.any():
    raise ValueError(f"{paths.template_pair_label}: needs both genuine (1) and impostor (0) "
                     f"pairs for a ROC, got {int(labels.sum())} genuine of {len(labels)}")


def read_ijb_meta(ijb_dir: str, target: str, check_images: bool = True) -> IJBMeta:
  """Reads and cross-checks the meta files of one target.

  The cheap checks run here, before any model is loaded: every file parses,
  both per-image files list the same images, every image exists, every
  template of a pair has images, and there are genuine and impostor pairs.

  Args:
    ijb_dir: the directory holding `loose_crop/` and `meta/`.
    target: "IJBB" or "IJBC".
    check_images: also check that every image file exists.

  Returns:
    An `IJBMeta`.

  Raises:
    ValueError: malformed or inconsistent meta files (named with the line).
    OSError: a missing file or image.
  """
  paths = ijb_paths(ijb_dir, target)
  for path in (paths.face_tid_mid, paths.name_5pts_score, paths.template_pair_label):
    if not os.path.isfile(path):
      raise OSError(f"{path}: no such file (expected InsightFace's IJB layout: "
                    f"{IMAGE_DIR}/ and {META_DIR}/{os.path.basename(path)})")
  names, templates, medias, lines = read_face_tid_mid(paths.face_tid_mid)
  names_5pts, landmarks, scores, lines_5pts = read_name_5pts_score(paths.name_5pts_score)
  _check_same_images(paths, names, lines, names_5pts, lines_5pts)
  if not names:
    raise ValueError(f"{paths.face_tid_mid}: no images")
  pairs, labels = read_template_pair_label(paths.template_pair_label)
  if check_images:
    _check_images_exist(paths, names, lines_5pts)
  _check_pair_templates(paths, pairs, labels, templates)
  return IJBMeta(paths, names, lines_5pts, templates, medias, landmarks, scores, pairs, labels)


def write_ijb_meta(ijb_dir: str, target: str, image_names, templates, medias, landmarks,
                   detector_scores, pairs, labels):
  """Writes the three meta files of `target` (each atomically).

  Args:
    ijb_dir: the dataset directory (`meta/` is created in it).
    target: "IJBB" or "IJBC".
    image_names: [n] names relative to `loose_crop/`.
    templates: [n] template ids.
    medias: [n] media ids.
    landmarks: [n, 5, 2] (x, y) in pixels of the loose crop.
    detector_scores: [n].
    pairs: [P, 2] template ids.
    labels: [P] 1 = genuine, 0 = impostor.

  Returns:
    The `IJBPaths` written.
  """
  paths = ijb_paths(ijb_dir, target)
  landmarks = np.asarray(landmarks, np.float64).reshape(-1, 2 * NUM_LANDMARKS)
  tid_mid = "".join(f"{n} {int(t)} {int(m)}\n"
                    for n, t, m in zip(image_names, templates, medias))
  pts = "".join(f"{n} {' '.join(f'{v:.3f}' for v in row)} {float(s):.6f}\n"
                for n, row, s in zip(image_names, landmarks, detector_scores))
  pair_text = "".join(f"{int(a)} {int(b)} {int(l)}\n"
                      for (a, b), l in zip(np.asarray(pairs), labels))
  for path, text in ((paths.face_tid_mid, tid_mid), (paths.name_5pts_score, pts),
                     (paths.template_pair_label, pair_text)):
    atomic.write_text(path, text, make_dirs=True)
  return paths
