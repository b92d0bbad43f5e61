"""Many `.rec` image records at known byte offsets, read in bulk (transcode fast path).

`RecordIOReader.read_at` costs a few system calls and Python objects per
record. A transcode worker reads thousands of records, in file order, so
here each record is read whole (up to where the next record of the file
starts, known from the `.idx`) straight into one packed buffer: one `preadv`
per run of adjacent records, and nothing else per record in Python. The
heads (RecordIO head, `IRHeader`, first label, leading image bytes) of all
records are then parsed by one numpy gather, and the images stay where they
were read.

The fast path only vouches for plain records: whole (not split at an
embedded magic number), with the right magic, inside the bytes read. Every
other record is marked `ok == False` for the caller to read with
`RecordIOReader`, which handles split records and raises the exact error
for broken ones.
"""
import dataclasses
import os

import numpy as np

from tfface.data.insightface import recordio

_BLOCK = 8 << 20  # bytes read by one call (about)
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
  staging: np.ndarray  # uint8: the records as read; the images lie inside
  at: np.ndarray  # int64: where each image starts in `staging`
  length: np.ndarray  # int64: image sizes (0 where not ok)


def _runs(offsets: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`(lo, hi)` index ranges of adjacent records read with one call each.

  A run of records that follow each other in the file is cut where a record
  starts `_BLOCK` bytes or more after the run's first one.
  """
  if not len(offsets):
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  new_run = np.r_[True, offsets[1:] != ends[:-1]]
  run_start = offsets[new_run][np.cumsum(new_run) - 1]
  block = (offsets - run_start) // _BLOCK
  lo = np.flatnonzero(new_run | np.r_[True, block[1:] != block[:-1]])
  return lo, np.r_[lo[1:], len(offsets)].astype(np.int64)


def _gather(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
  """`data[at[i]:at[i] + width]` per row, zeros where it runs past the end."""
  index = at[:, None] + np.arange(width)
  inside = index < len(data)
  out = np.zeros(index.shape, dtype=np.uint8)
  out[inside] = data[index[inside]]
  return out


def read_images(path: str, offsets: np.ndarray, ends: np.ndarray,
                scratch: np.ndarray | None = None) -> Images:
  """Reads the records at `offsets` (ascending) and locates their images.

  Args:
    path: the `.rec` file.
    offsets: int64 byte offsets of records, ascending.
    ends: for each record, where it ends at the latest: the next record's
      offset in the file, or the file size.
    scratch: optional reusable uint8 memory: when large enough, the records
      are read into its beginning, which saves a page fault per 4 KiB of
      fresh memory (`staging` is then a view of it).

  Returns:
    `Images`, one entry per offset.
  """
  sizes = np.asarray(ends, np.int64) - offsets
  starts = np.cumsum(sizes) - sizes  # where each record goes in the buffer
  total = int(sizes.sum())
  staging = (scratch[:total] if scratch is not None and len(scratch) >= total
             else np.empty(total, np.uint8))  # every byte is read into, or marked unread
  lo, hi = _runs(offsets, ends)
  read_to = []  # per run: where in the buffer its bytes end (short at end of file)
  view = memoryview(staging)
  with open(path, "rb", buffering=0) as f:
    for first, last, at in zip(starts[lo].tolist(), (starts[hi - 1] + sizes[hi - 1]).tolist(),
                               offsets[lo].tolist()):
      read_to.append(first + os.preadv(f.fileno(), [view[first:last]], at))
  del view
  readable = np.clip(np.repeat(np.array(read_to, np.int64), hi - lo) - starts, 0, sizes)
  fields = _gather(staging, starts, _HEAD).view(_FIELDS)[:, 0]
  length = (fields["lrecord"] & recordio.LENGTH_MASK).astype(np.int64)
  flag = fields["flag"].astype(np.int64)
  head = 8 + recordio.IR_SIZE + 4 * np.minimum(flag, _MAX_FLAG)
  image_length = length - (head - 8)
  ok = ((fields["magic"] == recordio.MAGIC) & (fields["lrecord"] >> 29 == 0)
        & (flag <= _MAX_FLAG) & (image_length >= 0) & (readable >= _HEAD)
        & (8 + length <= readable))
  image_length = np.where(ok, image_length, 0)
  at = starts + head
  signature = _gather(staging, np.where(ok, at, total), _SIGNATURE)
  signature[np.arange(_SIGNATURE) >= image_length[:, None]] = 0
  return Images(ok, np.where(flag == 0, fields["label"], fields["label0"]), signature,
                staging, np.where(ok, at, 0), image_length)
