"""Many `.rec` image records at known byte offsets, read in bulk (transcode fast path).

`RecordIOReader.read_at` costs a system call and several Python objects per
record, and a transcode worker reads thousands per shard. Here the `.rec` is
memory-mapped one window at a time (so resident memory stays bounded however
large the file) and the heads (RecordIO head, `IRHeader`, first label, first
image bytes) of all records in a window are parsed by one numpy gather;
image bytes are later copied from the mapping straight into the output.

The fast path only vouches for plain records: whole (not split at an
embedded magic number), with the right magic, inside the file. Every other
record is marked `ok == False` for the caller to read with `RecordIOReader`,
which handles split records and raises the exact error for broken ones.
"""
import dataclasses
import mmap
import os

import numpy as np

from tfface.data import recordio

_WINDOW = 16 << 20  # bytes mapped at once (plus _SLACK)
_SLACK = 1 << 20  # mapped past a window so that records starting in it fit
_SIGNATURE = 8  # image bytes returned for format checks
_HEAD = 8 + recordio.IR_SIZE + 4  # RecordIO head, IRHeader, first float label
_MAX_FLAG = 1 << 16  # more labels than this: leave the record to RecordIOReader
_FIELDS = np.dtype([("magic", "<u4"), ("lrecord", "<u4"), ("flag", "<u4"), ("label", "<f4"),
                    ("id", "<u8"), ("id2", "<u8"), ("label0", "<f4")])


@dataclasses.dataclass
class Heads:
  """What the fast path read of each record (entries with `ok == False` are unset)."""

  ok: np.ndarray  # bool: a plain record, fully inside the file
  image_start: np.ndarray  # int64 byte offset of the image in the .rec
  image_length: np.ndarray  # int64
  label: np.ndarray  # float32: the header label, or the first of `flag` labels
  signature: np.ndarray  # (n, 8) uint8: leading image bytes (zero past the end)


def _windows(offsets: np.ndarray, size: int):
  """Yields `(base, end, slice of offsets)` per window holding any offsets (sorted)."""
  if not len(offsets):
    return
  window = offsets // _WINDOW
  cuts = np.flatnonzero(np.diff(window)) + 1
  for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(offsets)].tolist()):
    base = int(offsets[lo]) // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
    end = min(size, (int(window[lo]) + 1) * _WINDOW + _SLACK)
    yield base, end, slice(lo, hi)


def _gather(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
  """`data[at[i]:at[i] + width]` per row, zeros where it runs past the end."""
  index = at[:, None] + np.arange(width)
  inside = index < len(data)
  out = np.zeros(index.shape, dtype=np.uint8)
  out[inside] = data[index[inside]]
  return out


def read_heads(path: str, offsets: np.ndarray) -> Heads:
  """Parses the heads of the records at `offsets` (sorted ascending) without copying images.

  Args:
    path: the `.rec` file.
    offsets: int64 byte offsets of records, ascending (sequential access).

  Returns:
    `Heads`, one entry per offset.
  """
  count = len(offsets)
  heads = Heads(np.zeros(count, bool), np.zeros(count, np.int64), np.zeros(count, np.int64),
                np.zeros(count, np.float32), np.zeros((count, _SIGNATURE), np.uint8))
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    for base, end, part in _windows(offsets, size):
      with mmap.mmap(f.fileno(), end - base, access=mmap.ACCESS_READ, offset=base) as mm:
        data = np.frombuffer(mm, dtype=np.uint8)
        at = offsets[part] - base
        fields = _gather(data, at, _HEAD).view(_FIELDS)[:, 0]
        length = (fields["lrecord"] & recordio.LENGTH_MASK).astype(np.int64)
        flag = fields["flag"].astype(np.int64)
        labels_end = recordio.IR_SIZE + 4 * flag
        ok = ((fields["magic"] == recordio.MAGIC) & (fields["lrecord"] >> 29 == 0)
              & (flag <= _MAX_FLAG) & (length >= labels_end)
              & (at + 8 + length <= len(data)) & (at + _HEAD <= len(data)))
        heads.ok[part] = ok
        heads.image_start[part] = offsets[part] + 8 + labels_end
        heads.image_length[part] = length - labels_end
        heads.label[part] = np.where(flag == 0, fields["label"], fields["label0"])
        heads.signature[part] = _gather(data, np.where(ok, at + 8 + labels_end, len(data)),
                                        _SIGNATURE)
        del data, fields  # release the mapping's buffer before it closes
  ends = heads.image_start + heads.image_length
  heads.signature[np.arange(_SIGNATURE) >= heads.image_length[:, None]] = 0
  heads.ok &= ends <= size
  return heads


def copy_images(path: str, starts: np.ndarray, lengths: np.ndarray, target: bytearray,
                target_at: np.ndarray) -> int:
  """Copies `.rec` bytes `[starts[i], starts[i] + lengths[i])` to `target[target_at[i]:]`.

  `starts` must be ascending (one sequential pass through the file) and
  each span must lie inside the file (as `read_heads` checked).

  Returns:
    The number of spans copied.
  """
  out = memoryview(target)
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    for base, end, part in _windows(starts, size):
      local = starts[part] - base
      if np.any(local + lengths[part] > end - base):  # read_heads checked this
        raise ValueError(f"{path}: a span to copy runs past the mapped window at byte "
                         f"offset {end}")
      with mmap.mmap(f.fileno(), end - base, access=mmap.ACCESS_READ, offset=base) as mm:
        with memoryview(mm) as source:
          for start, length, at in zip(local.tolist(),
                                       lengths[part].tolist(), target_at[part].tolist()):
            out[at:at + length] = source[start:start + length]
  return len(starts)
