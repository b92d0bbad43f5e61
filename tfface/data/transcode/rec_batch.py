"""Many `.rec` image records at known byte offsets, read in bulk (transcode fast path).

`RecordIOReader.read_at` costs a system call and several Python objects per
record (about 7 us), and memory-mapping costs page faults (more). A
transcode worker reads thousands of records, often a large share of the
file, so here nearby records are read together: one `preadv` per span of
up to `_BLOCK` bytes whose records lie less than `_GAP` bytes apart (a
sequential pass when the records are dense, one read per record when they
are sparse). The heads (RecordIO head, `IRHeader`, first label, leading
image bytes) of a span's records are parsed by one numpy gather, and the
image bytes are packed into one staging buffer.

The fast path only vouches for plain records: whole (not split at an
embedded magic number), with the right magic, inside the span read. Every
other record is marked `ok == False` for the caller to read with
`RecordIOReader`, which handles split records and raises the exact error
for broken ones.
"""
import dataclasses
import os

import numpy as np

from tfface.data.insightface import recordio

_BLOCK = 8 << 20  # bytes read at once at most
_GAP = 16 << 10  # records further apart than this are read separately
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
  staging: bytearray  # the images of the ok records, packed
  at: np.ndarray  # int64: where each image starts in `staging`
  length: np.ndarray  # int64: image sizes


def _spans(offsets: np.ndarray, ends: np.ndarray):
  """Yields `(lo, hi)` index ranges of records read with one call."""
  gaps = np.flatnonzero(offsets[1:] - ends[:-1] > _GAP) + 1
  for lo, stop in zip(np.r_[0, gaps].tolist(), np.r_[gaps, len(offsets)].tolist()):
    while lo < stop:  # split long runs into reads of at most _BLOCK bytes
      hi = lo + int(np.searchsorted(ends[lo:stop], offsets[lo] + _BLOCK, side="right"))
      hi = max(hi, lo + 1)
      yield lo, hi
      lo = hi


def _gather(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
  """`data[at[i]:at[i] + width]` per row, zeros where it runs past the end."""
  index = at[:, None] + np.arange(width)
  inside = index < len(data)
  out = np.zeros(index.shape, dtype=np.uint8)
  out[inside] = data[index[inside]]
  return out


def read_images(path: str, offsets: np.ndarray, ends: np.ndarray) -> Images:
  """Reads the records at `offsets` (ascending) and packs their images.

  Args:
    path: the `.rec` file.
    offsets: int64 byte offsets of records, ascending.
    ends: for each record, where it ends at the latest (the next record's
      offset in the file, or the file size); only used to plan the reads.

  Returns:
    `Images`, one entry per offset.
  """
  count = len(offsets)
  out = Images(np.zeros(count, bool), np.zeros(count, np.float32),
               np.zeros((count, _SIGNATURE), np.uint8), bytearray(), np.zeros(count, np.int64),
               np.zeros(count, np.int64))
  if not count:
    return out
  spans = [(lo, hi, max(1, min(int(ends[hi - 1] - offsets[lo]), _BLOCK)))
            for lo, hi in _spans(offsets, ends)]
  out.staging = bytearray(sum(size for _, _, size in spans))  # room for every image
  staging, filled = memoryview(out.staging), 0
  block = bytearray()
  with open(path, "rb", buffering=0) as f:
    for lo, hi, size in spans:
      start = int(offsets[lo])
      if len(block) < size:
        block = bytearray(max(size, min(_BLOCK, 2 * len(block))))
      got = os.preadv(f.fileno(), [memoryview(block)[:size]], start)
      data = np.frombuffer(block, dtype=np.uint8, count=got)
      local = offsets[lo:hi] - start
      fields = _gather(data, local, _HEAD).view(_FIELDS)[:, 0]
      length = (fields["lrecord"] & recordio.LENGTH_MASK).astype(np.int64)
      flag = fields["flag"].astype(np.int64)
      image = local + 8 + recordio.IR_SIZE + 4 * flag  # where the image starts
      image_length = length - recordio.IR_SIZE - 4 * flag
      ok = ((fields["magic"] == recordio.MAGIC) & (fields["lrecord"] >> 29 == 0)
            & (flag <= _MAX_FLAG) & (image_length >= 0) & (local + _HEAD <= got)
            & (image + image_length <= got))
      out.ok[lo:hi] = ok
      out.label[lo:hi] = np.where(flag == 0, fields["label"], fields["label0"])
      signature = _gather(data, np.where(ok, image, got), _SIGNATURE)
      signature[np.arange(_SIGNATURE) >= image_length[:, None]] = 0
      out.signature[lo:hi] = signature
      sizes = np.where(ok, image_length, 0)
      out.at[lo:hi] = filled + np.cumsum(sizes) - sizes
      out.length[lo:hi] = sizes
      source = memoryview(block)
      for src, n, dst in zip(image[ok].tolist(), sizes[ok].tolist(),
                             out.at[lo:hi][ok].tolist()):
        staging[dst:dst + n] = source[src:src + n]
      filled += int(sizes.sum())
      del data, source  # `block` may be reallocated next
  return out
