"""The InsightFace dataset view of a `.rec` directory (`train.rec`, `train.idx`, `property`).

InsightFace recs come in two layouts:

* With a header: key 0 has `flag > 0` and label `[first identity key, end]`;
  keys `1 .. first-1` are images and the keys after them are identity records
  whose label is the `[start, end)` range of that identity's image keys.
* Header-less (MXNet im2rec output, shuffled recs): every key is an image.

Image labels are a float scalar or an array whose first value is the class.
"""
import dataclasses
import logging
import os
from typing import Iterator

import numpy as np

from tfface import atomic
from tfface.data.insightface import recordio

log = logging.getLogger(__name__)

# float32 represents every integer only up to 2**24; larger labels may be off by one.
FLOAT32_EXACT_LIMIT = 2**24
# How many identity records to compare with image labels when a rec is opened.
_IDENTITY_CHECKS = 64


@dataclasses.dataclass(frozen=True)
class Property:
  """The one-line `property` file: `num_classes,height,width`."""

  num_classes: int
  height: int = 112
  width: int = 112


def read_property(path: str) -> Property:
  """Reads a `property` file, e.g. `85742,112,112`.

  Raises:
    ValueError: the file is not three comma-separated positive integers.
  """
  with open(path) as f:
    text = f.read().strip()
  try:
    values = [int(v) for v in text.split(",")]
    if len(values) != 3 or min(values) <= 0:
      raise ValueError
  except ValueError:
    raise ValueError(f"{path}: line 1: expected 'num_classes,height,width' with positive "
                     f"integers, got {text[:80]!r}") from None
  return Property(*values)


def write_property(path: str, num_classes: int, height: int = 112, width: int = 112):
  """Writes a `property` file the way InsightFace does (`N,H,W`, no newline)."""
  atomic.write_text(path, f"{num_classes},{height},{width}")


def class_of(label) -> int:
  """The class index of a record label: the scalar itself or `label[0]`."""
  value = label if np.ndim(label) == 0 else label[0]
  return int(value)


class InsightFaceRec:
  """Random-access and streaming view of an InsightFace `.rec` dataset.

  Args:
    source: a directory holding `train.rec` (+ `train.idx`, `property`), or a
      `(rec_path, idx_path)` pair; `idx_path` may be None, in which case the
      `.rec` is scanned once for its record offsets and keys are record
      ordinals (as InsightFace's writers number them).

  Attributes:
    num_images, num_classes, image_keys: what the dataset holds (header and
      identity records are not counted as images).
    has_header: whether key 0 is the InsightFace header record.
    property: the `Property` file contents or None.
    notes: human-readable remarks (label disagreements, float32 precision).
  """

  def __init__(self, source, prefix: str = "train"):
    if isinstance(source, (tuple, list)):
      self.rec_path, self.idx_path = source
      self.property_path = os.path.join(os.path.dirname(self.rec_path), "property")
    else:
      self.rec_path = os.path.join(source, f"{prefix}.rec")
      self.idx_path = os.path.join(source, f"{prefix}.idx")
      self.property_path = os.path.join(source, "property")
      if not os.path.exists(self.idx_path):
        self.idx_path = None
    if not os.path.exists(self.rec_path):
      raise FileNotFoundError(f"{self.rec_path}: no such .rec file")
    self.index = recordio.IndexedRecordIO(self.rec_path, self.idx_path)
    self.notes: list[str] = []
    self.property = (read_property(self.property_path)
                     if os.path.exists(self.property_path) else None)
    self._detect_layout()
    self._num_classes = self.declared_num_classes
    if self._num_classes is not None and self._num_classes > FLOAT32_EXACT_LIMIT:
      self._note(f"{self.rec_path}: {self._num_classes} classes exceed 2**24; labels "
                 "are float32 in RecordIO and may be off by one above that")

  def _note(self, message: str):
    self.notes.append(message)
    log.warning(message)

  def offset_of(self, key: int) -> int:
    """Byte offset of `key` in the `.rec` (KeyError naming the `.idx` if absent)."""
    return self.index.offset_of(key)

  def _detect_layout(self):
    self.has_header = False
    self.identity_keys = np.zeros(0, dtype=np.int64)
    self.identity_records_agree = True
    if len(self.index.keys) and self.index.keys[0] == 0:
      header, rest = self.read_record(0)
      # The header record carries [first identity key, end] and no image.
      if header.flag > 0 and len(rest) == 0 and header.flag >= 2:
        first, end = int(header.label[0]), int(header.label[1])
        if not 1 <= first <= end:
          raise ValueError(f"{self.rec_path}: header record (key 0) has label "
                           f"[{first}, {end}], expected 1 <= first <= end")
        self.has_header = True
        self.image_keys = np.arange(1, first, dtype=np.int64)
        self.identity_keys = np.arange(first, end, dtype=np.int64)
        self._check_identity_records()
        return
    self.image_keys = self.index.keys.copy()

  def _check_identity_records(self):
    """Compares a sample of identity records with the labels of their images."""
    count = len(self.identity_keys)
    if not count:
      return
    sample = np.unique(np.linspace(0, count - 1, min(count, _IDENTITY_CHECKS)).astype(int))
    for c in sample:
      key = int(self.identity_keys[c])
      header, _ = self.read_record(key)
      if header.flag < 2:
        problem = f"identity record {key} has no [start, end) label"
      else:
        start, end = int(header.label[0]), int(header.label[1])
        if not 1 <= start < end <= len(self.image_keys) + 1:
          problem = f"identity record {key} has range [{start}, {end})"
        else:
          got = {self.label_of(start), self.label_of(end - 1)}
          problem = (None if got == {int(c)} else
                     f"identity record {key} (class {c}) spans keys [{start}, {end}) "
                     f"whose images are labelled {sorted(got)}")
      if problem:
        self.identity_records_agree = False
        self._note(f"{self.rec_path}: {problem}; the identity records disagree with "
                   "the image labels (as in Glint360K): using the image labels")
        return

  @property
  def num_images(self) -> int:
    return len(self.image_keys)

  @property
  def declared_num_classes(self) -> int | None:
    """Classes known without a scan (`property`, agreeing identity records), else None."""
    if self.property is not None:
      return self.property.num_classes
    if self.has_header and self.identity_records_agree:
      return len(self.identity_keys)
    return None

  @property
  def num_classes(self) -> int:
    """From `property`, else the identity records, else max image label + 1 (a scan)."""
    if self._num_classes is None:
      labels = self.labels()
      self._num_classes = int(labels.max()) + 1 if len(labels) else 0
    return self._num_classes

  def read_record(self, key: int) -> tuple[recordio.IRHeader, bytes]:
    """The `IRHeader` and payload (after the labels) of any record."""
    offset = self.offset_of(key)
    payload = self.index.reader.read_at(offset)
    return recordio.unpack_header(payload, f"{self.rec_path}: key {key} at byte offset {offset}")

  def label_of(self, key: int) -> int:
    """Class index of image `key`."""
    return self._class(self.read_record(key)[0].label, key)

  def _class(self, label, key) -> int:
    value = class_of(label)
    if value > FLOAT32_EXACT_LIMIT and not getattr(self, "_warned_float32", False):
      self._warned_float32 = True
      self._note(f"{self.rec_path}: key {key} has label {value} > 2**24; float32 labels "
                 "cannot hold every integer that large")
    return value

  def read(self, key: int) -> tuple[int, bytes]:
    """`(label, image_bytes)` of image `key`; the bytes are the stored JPEG."""
    header, image = self.read_record(key)
    return self._class(header.label, key), image

  def __len__(self) -> int:
    return self.num_images

  def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
    """Streams `(key, label, image_bytes)` over all images in file order.

    Raises:
      ValueError: an image key that the `.idx` does not list, a record it
        does not list, an `.idx` offset where no record starts (see
        `IndexedRecordIO`), or a broken record (its key and byte offset).
    """
    if self.has_header:
      self.image_offsets()  # every image key is listed: none is silently left out
    first, last = (self.image_keys[0], self.image_keys[-1]) if self.num_images else (1, 0)
    for key, offset, payload in self.index:
      if self.has_header and not first <= key <= last:
        continue  # the header and identity records
      header, image = recordio.unpack_header(
          payload, f"{self.rec_path}: key {key} at byte offset {offset}")
      yield key, self._class(header.label, key), image

  def labels(self) -> np.ndarray:
    """int64 labels of all images, ordered like `image_keys` (one streaming scan)."""
    if getattr(self, "_labels", None) is None:
      labels = np.full(len(self.image_keys), -1, dtype=np.int64)
      for key, label, _ in self:
        labels[np.searchsorted(self.image_keys, key)] = label
      self._labels = labels
    return self._labels

  def image_offsets(self) -> np.ndarray:
    """Byte offsets of the images, ordered like `image_keys`.

    Raises:
      ValueError: an image key (below the header's first identity key) that
        the `.idx` does not list.
    """
    try:
      return self.index.offsets_of(self.image_keys)
    except KeyError as e:
      raise ValueError(f"{e.args[0]}: an image key below the header's first identity "
                       "key is missing from the index") from None

  def describe(self) -> str:
    """A one-line summary: images, identities, layout."""
    layout = "header + identity records" if self.has_header else "header-less"
    return (f"{self.rec_path}: {self.num_images} images, {self.num_classes} identities "
            f"({layout}, {os.path.getsize(self.rec_path)} bytes)")

  def close(self):
    self.index.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
