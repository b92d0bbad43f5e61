"""TFRecord framing without TensorFlow: reading records, checking their CRCs.

A TFRecord file is a sequence of `uint64 length`, `uint32 masked_crc32c(length)`,
`data`, `uint32 masked_crc32c(data)`, where CRC-32C (`google-crc32c`) is
masked as `((crc >> 15) | (crc << 17)) + 0xa282ead8`. Walking that takes a
few lines, and doing it here keeps integrity checks and `inspect_data` free
of TensorFlow; `tf.data.TFRecordDataset` is the oracle in the tests.
"""
import dataclasses
import os
import struct
from typing import Iterator

import google_crc32c
import numpy as np

from tfface.data.tfrecord import digest as digest_lib

HEADER = struct.Struct("<QI")  # data length, masked CRC of the 8 length bytes
FOOTER = struct.Struct("<I")  # masked CRC of the data
OVERHEAD = HEADER.size + FOOTER.size  # 16 framing bytes per record
_MASK_DELTA = 0xA282EAD8
_READ_BLOCK = 8 << 20


def mask(crc: np.ndarray) -> np.ndarray:
  """TFRecord's masked CRC of each of a uint32 array: rotate right 15, add a constant."""
  crc = np.asarray(crc, dtype=np.uint32).reshape(-1)  # 1-d: arrays wrap silently, scalars warn
  return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(_MASK_DELTA)


def masked_crc32c(data) -> int:
  """Masked CRC-32C of `data` (bytes or a uint8 numpy array: google-crc32c
  takes no bytearray or memoryview)."""
  return int(mask(google_crc32c.value(data))[0])


class CorruptRecord(ValueError):
  """A record whose framing or CRC is wrong; `offset` is where it starts."""

  def __init__(self, path: str, offset: int, reason: str):
    super().__init__(f"{path}: corrupt record at byte offset {offset}: {reason}")
    self.path, self.offset, self.reason = path, offset, reason


def iter_records(path: str) -> Iterator[tuple[int, bytes]]:
  """Yields `(byte_offset, data)` of every record, checking both CRCs of each.

  Raises:
    CorruptRecord: at the first record that is truncated or fails a CRC.
  """
  size = os.path.getsize(path)
  with open(path, "rb", buffering=1 << 20) as f:
    offset = 0
    while offset < size:
      head = f.read(HEADER.size)
      if len(head) < HEADER.size:
        raise CorruptRecord(path, offset, f"truncated: {size - offset} bytes left, a record "
                            f"header takes {HEADER.size}")
      length, length_crc = HEADER.unpack(head)
      if masked_crc32c(head[:8]) != length_crc:
        raise CorruptRecord(path, offset, f"length CRC mismatch (length field {length})")
      if offset + OVERHEAD + length > size:
        raise CorruptRecord(path, offset, f"truncated: a {length}-byte record does not fit "
                            f"in the {size - offset - OVERHEAD} bytes left")
      data = f.read(length)
      (data_crc,) = FOOTER.unpack(f.read(FOOTER.size))
      if masked_crc32c(data) != data_crc:
        raise CorruptRecord(path, offset, f"data CRC mismatch ({length}-byte record)")
      yield offset, data
      offset += OVERHEAD + length


@dataclasses.dataclass
class FileScan:
  """What one pass over a TFRecord file found."""

  num_records: int
  num_bytes: int
  digest: str


def scan(path: str, algorithm: str, on_bytes=None) -> FileScan:
  """Digests a TFRecord file and counts its records by their length fields.

  One pass in large blocks (disk speed). The CRC of each length field is
  checked, so a damaged length is reported as such; the data CRCs are not
  (`iter_records` checks them).

  Args:
    path: the file.
    algorithm: a `digest.ALGORITHMS` entry.
    on_bytes: optional callable `(num_bytes)` after each block (progress).

  Raises:
    CorruptRecord: a length field fails its CRC, or the framing runs past
      the end of the file (truncated).
  """
  hasher = digest_lib.new(algorithm)
  size = os.path.getsize(path)
  count, next_record, position, start = 0, 0, 0, 0
  tail = b""
  with open(path, "rb") as f:
    while block := f.read(_READ_BLOCK):
      hasher.update(block)
      data = tail + block
      base = position - len(tail)
      while next_record + HEADER.size <= base + len(data):
        start = next_record
        at = next_record - base
        length, length_crc = HEADER.unpack_from(data, at)
        if masked_crc32c(data[at:at + 8]) != length_crc:
          raise CorruptRecord(path, start, f"length CRC mismatch (length field {length})")
        next_record += OVERHEAD + length
        count += 1
      keep = max(0, next_record - base)
      tail = data[keep:] if keep < len(data) else b""
      position += len(block)
      if on_bytes:
        on_bytes(len(block))
  if next_record != size:
    raise CorruptRecord(path, start if next_record > size else next_record,
                        f"truncated: the framing ends at byte {next_record}, the file at "
                        f"{size}")
  return FileScan(count, size, hasher.hexdigest())


def tfrecord_files(directory: str) -> list[str]:
  """The `.tfrecord` files of a directory, sorted."""
  return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                if f.endswith(".tfrecord"))
