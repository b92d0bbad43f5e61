"""Many `.rec` image records at known byte offsets, parsed in bulk (transcode fast path).

`RecordIOReader.read_at` costs a few system calls and Python objects per
record. A transcode worker handles thousands of records, so here the `.rec`
is mapped into memory (`mmap`) and the heads (RecordIO head, `IRHeader`,
first label, leading image bytes) of all records are parsed by one numpy
gather, in file order; the images stay where they lie in the mapping, and
the framing copies them from there straight into the shard. Reading them
into a buffer first (`preadv`) cost a copy per byte and fresh memory the
size of a group of shards (docs/data.md, "Speed").

The fast path only vouches for plain records: whole (not split at an
embedded magic number), with the right magic, inside the file. Every other
record is marked `ok == False` for the caller to read with `RecordIOReader`,
which handles split records and raises the exact error for broken ones.

A `.rec` that shrinks while it is mapped makes the next access past its new
end a SIGBUS, which kills the process: `transcode` runs the workers in
child processes and reports that as an error naming the file.
"""
import dataclasses
import mmap
import os

import numpy as np

from tfface.data.insightface import recordio
from tfface.data.tfrecord import example_batch

_SIGNATURE = 8  # leading image bytes returned for format checks
_HEAD = 8 + recordio.IR_SIZE + 4  # RecordIO head, IRHeader, first float label
_MAX_FLAG = 1 << 16  # more labels than this: leave the record to RecordIOReader
_FIELDS = np.dtype([("magic", "<u4"), ("lrecord", "<u4"), ("flag", "<u4"), ("label", "<f4"),
                    ("id", "<u8"), ("id2", "<u8"), ("label0", "<f4")])


@dataclasses.dataclass
class Images:
  """Records read by the fast path; entries with `ok == False` are unset."""

  ok: np.ndarray  # bool: a plain record, read whole
  label: np.ndarray  # float32: the header label, or the first of `flag` labels
  signature: np.ndarray  # (n, 8) uint8: leading image bytes (zero past the image)
  data: np.ndarray  # uint8: the mapped `.rec`; the images lie inside
  at: np.ndarray  # int64: where each image starts in `data` (its byte offset; 0 where not ok)
  length: np.ndarray  # int64: image sizes (0 where not ok)


def _gather(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
  """`data[at[i]:at[i] + width]` per row, zeros where it lies outside `data`.

  Rows that lie inside `data` are copied whole (`example_batch.byte_rows`: a
  row copy each, 0.2 us per record, against 0.5 for an index per byte, which
  only the few rows at the end still take).
  """
  out = np.zeros((len(at), width), dtype=np.uint8)
  whole = (at >= 0) & (at <= len(data) - width)
  if len(data) >= width:
    out[whole] = example_batch.byte_rows(data, width)[at[whole]]
  rest = np.flatnonzero(~whole)  # rows not wholly inside: byte by byte
  index = at[rest, None] + np.arange(width)
  inside = (index >= 0) & (index < len(data))
  part = out[rest]
  part[inside] = data[index[inside]]
  out[rest] = part
  return out


def map_file(path: str) -> np.ndarray:
  """The bytes of the file at `path`, mapped read-only (uint8; unmapped once unreferenced)."""
  with open(path, "rb") as f:
    if os.fstat(f.fileno()).st_size == 0:
      return np.zeros(0, np.uint8)  # mmap refuses empty files
    # The mapping stays valid after the file is closed; the array keeps it alive.
    return np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)


def map_images(data: np.ndarray, offsets: np.ndarray, ends: np.ndarray) -> Images:
  """Locates the images of the records at `offsets` (ascending) in the mapped `.rec`.

  Args:
    data: the `.rec`'s bytes (`map_file`).
    offsets: int64 byte offsets of records, ascending (the heads are then
      read in file order, which keeps a cold page cache's reads sequential).
    ends: for each record, where it ends at the latest: the next record's
      offset in the file, or the file size.

  Returns:
    `Images`, one entry per offset.
  """
  offsets = np.asarray(offsets, np.int64)
  readable = np.clip(len(data) - offsets, 0, np.asarray(ends, np.int64) - offsets)
  fields = _gather(data, offsets, _HEAD).view(_FIELDS)[:, 0]
  length = (fields["lrecord"] & recordio.LENGTH_MASK).astype(np.int64)
  flag = fields["flag"].astype(np.int64)
  head = 8 + recordio.IR_SIZE + 4 * np.minimum(flag, _MAX_FLAG)
  image_length = length - (head - 8)
  ok = ((fields["magic"] == recordio.MAGIC) & (fields["lrecord"] >> 29 == 0)
        & (flag <= _MAX_FLAG) & (image_length >= 0) & (readable >= _HEAD)
        & (8 + length <= readable))
  image_length = np.where(ok, image_length, 0)
  at = offsets + head
  signature = _gather(data, np.where(ok, at, len(data)), _SIGNATURE)
  signature[np.arange(_SIGNATURE) >= image_length[:, None]] = 0
  return Images(ok, np.where(flag == 0, fields["label"], fields["label0"]), signature,
                data, np.where(ok, at, 0), image_length)
