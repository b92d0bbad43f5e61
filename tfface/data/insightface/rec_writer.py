"""Writes `.rec` datasets in the InsightFace layout that its MXNet loaders expect.

Layout: key 0 is a header record (`flag 2`, label `[N+1, N+1+K]`, no image),
keys `1..N` are the images in class order with scalar labels, and keys
`N+1..N+K` are identity records whose label is `[start, end)` of that class's
image keys. Counts are not needed up front: the header is written as a
placeholder and patched in place when the writer closes (its size does not
depend on the values, and positive float32 labels can never contain the
RecordIO magic, so the record is never split).
"""
import os

from tfface import atomic
from tfface.data.insightface import rec as insightface_rec
from tfface.data.insightface import recordio


class InsightFaceWriter(atomic.CommitOnSuccess):
  """Streams images, grouped by class, into `train.rec`/`train.idx`/`property`.

  Args:
    output_dir: directory to write into (created if needed).
    image_size: `(height, width)` written to `property`.
    prefix: file stem, `train` by default.

  Images must arrive with non-decreasing labels `0..K-1` (InsightFace stores
  each identity's images contiguously). The files appear under their final
  names only when `close()` succeeds.
  """

  def __init__(self, output_dir: str, image_size=(112, 112), prefix: str = "train"):
    os.makedirs(output_dir, exist_ok=True)
    self.output_dir = output_dir
    self.image_size = tuple(image_size)
    self._writer = recordio.RecordIOWriter(
        os.path.join(output_dir, f"{prefix}.rec"), os.path.join(output_dir, f"{prefix}.idx"))
    self._header_offset = self._writer.write(self._header([0, 0]), key=0)
    self._starts: list[int] = []  # first image key of each class
    self.num_images = 0

  @staticmethod
  def _header(label) -> bytes:
    return recordio.pack_header(recordio.IRHeader(2, label, 0, 0))

  def add(self, label: int, image: bytes):
    """Appends one encoded image of class `label`."""
    label = int(label)
    current = len(self._starts) - 1
    if label < current:
      raise ValueError(f"{self.output_dir}: labels must be non-decreasing; got class "
                       f"{label} after class {current}")
    key = self.num_images + 1
    while len(self._starts) <= label:
      # Classes without images get empty ranges so that class == identity index.
      self._starts.append(key)
    self._writer.write(recordio.pack_header(recordio.IRHeader(0, label, key, 0), image), key)
    self.num_images += 1

  @property
  def num_classes(self) -> int:
    return len(self._starts)

  def close(self):
    """Writes identity records, patches the header, writes `property`, renames."""
    end_key = self.num_images + 1
    bounds = self._starts + [end_key]
    for c in range(self.num_classes):
      key = end_key + c
      record = recordio.pack_header(recordio.IRHeader(2, [bounds[c], bounds[c + 1]], key, 0))
      self._writer.write(record, key)
    self._writer.patch(self._header_offset,
                       self._header([end_key, end_key + self.num_classes]))
    self._writer.close()
    insightface_rec.write_property(os.path.join(self.output_dir, "property"),
                               self.num_classes, *self.image_size)

  def abort(self):
    self._writer.abort()
