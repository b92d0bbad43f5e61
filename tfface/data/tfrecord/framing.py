"""TFRecord files without TensorFlow: `tf.train.Example` encoding, framing, checks.

A TFRecord file is a sequence of `uint64 length`, `uint32 masked_crc32c(length)`,
`data`, `uint32 masked_crc32c(data)`. Writing it here (rather than with
`tf.io.TFRecordWriter`) keeps the transcode workers free of TensorFlow, so
they start in milliseconds; `tests/test_transcode.py` checks that tf.data
reads the result.
"""
import hashlib
import os
import struct
import zlib
from typing import Iterator

from tfface import atomic
from tfface.data.tfrecord import crc32c
from tfface.data.tfrecord import schema

_U64 = struct.Struct("<Q")
_READ_BLOCK = 8 << 20
# Crc batches of about this many bytes amortize numpy call overhead.
_BATCH_BYTES = 4 << 20


_SMALL_VARINTS = [bytes([v]) for v in range(128)]


def _varint(value: int) -> bytes:
  if 0 <= value < 0x80:
    return _SMALL_VARINTS[value]
  if 0 <= value < 0x4000:  # image lengths: the common case, without a loop
    return bytes(((value & 0x7F) | 0x80, value >> 7))
  value &= (1 << 64) - 1  # negative int64 as two's complement, like protobuf
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _int64_entry_heads(name: str) -> list[bytes]:
  """Per varint width n (1..10): the bytes of an int64 map entry before its value."""
  key = name.encode()
  # {1: name, 2: Feature{3: Int64List{1: packed value}}}; every length < 128.
  return [None] + [bytes((0x0A, 2 + len(key) + 6 + n, 0x0A, len(key))) + key
                   + bytes((0x12, 4 + n, 0x1A, 2 + n, 0x0A, n)) for n in range(1, 11)]


# Example pieces, shared with the vectorized encoder in example_batch.
LABEL_HEADS = _int64_entry_heads(schema.FEATURE_LABEL)
KEY_HEADS = _int64_entry_heads(schema.FEATURE_KEY)
IMAGE_NAME = bytes((0x0A, len(schema.FEATURE_IMAGE))) + schema.FEATURE_IMAGE.encode()


def encode_example(image: bytes, label: int, key: int) -> bytes:
  """Serializes the `tf.train.Example` of one face image (see `schema`).

  The bytes parse with `tf.train.Example.FromString` and `tf.io.parse_example`;
  building them by hand is several times faster than the protobuf classes.
  Map entries are written label, image, key (protobuf accepts any order).
  """
  n = len(image)
  v_image = _varint(n)
  bytes_list = 1 + len(v_image) + n  # BytesList{1: image}
  v_bytes_list = _varint(bytes_list)
  feature = 1 + len(v_bytes_list) + bytes_list  # Feature{1: bytes_list}
  v_feature = _varint(feature)
  entry = len(IMAGE_NAME) + 1 + len(v_feature) + feature  # {1: name, 2: feature}
  v_entry = _varint(entry)
  v_label, v_key = _varint(label), _varint(key)
  label_head, key_head = LABEL_HEADS[len(v_label)], KEY_HEADS[len(v_key)]
  features = (len(label_head) + len(v_label) + 1 + len(v_entry) + entry + len(key_head)
              + len(v_key))
  return b"".join((b"\x0a", _varint(features), label_head, v_label, b"\x0a", v_entry,
                   IMAGE_NAME, b"\x12", v_feature, b"\x0a", v_bytes_list, b"\x0a", v_image,
                   image, key_head, v_key))


def frame(records: list[bytes]) -> bytes:
  """TFRecord framing of a batch of records, CRCs computed in one vectorized pass."""
  lengths = [_U64.pack(len(r)) for r in records]
  crcs = crc32c.masked_crc32c_many(lengths + records)
  n = len(records)
  out = []
  for i, record in enumerate(records):
    out += (lengths[i], struct.pack("<I", crcs[i]), record, struct.pack("<I", crcs[n + i]))
  return b"".join(out)


class TFRecordWriter(atomic.CommitOnSuccess):
  """Writes one TFRecord file under a temporary name; renames it on `close()`.

  Tracks the record count and the SHA-256 of the bytes written, which the
  manifest records.
  """

  def __init__(self, path: str):
    self.path = path
    self._tmp = atomic.temporary_name(path)
    self._file = open(self._tmp, "wb")
    self._pending: list[bytes] = []
    self._pending_bytes = 0
    self._sha = hashlib.sha256()
    # What verify() compares the file with, per write: (size, zlib.crc32) of
    # a batch of write() calls, or the buffer given to write_framed().
    self._written: list[tuple[int, int] | memoryview] = []
    self.num_records = 0
    self.num_bytes = 0

  def write(self, record: bytes):
    """Queues one serialized record; batches are framed and written together."""
    self._pending.append(record)
    self._pending_bytes += len(record)
    if self._pending_bytes >= _BATCH_BYTES:
      self._flush()

  def write_framed(self, data, num_records: int):
    """Writes `num_records` records already framed (e.g. by `example_batch`).

    `data` must stay unchanged until `verify()`, which compares the file with it.
    """
    self._flush()
    view = memoryview(data).cast("B")
    self._file.write(view)
    self._sha.update(view)
    self._written.append(view)
    self.num_records += num_records
    self.num_bytes += len(view)

  def _flush(self):
    if not self._pending:
      return
    data = frame(self._pending)
    self._file.write(data)
    self._sha.update(data)
    self._written.append((len(data), zlib.crc32(data)))
    self.num_records += len(self._pending)
    self.num_bytes += len(data)
    self._pending, self._pending_bytes = [], 0

  @property
  def sha256(self) -> str:
    return self._sha.hexdigest()

  def finish(self):
    """Writes out and syncs everything; the file keeps its temporary name."""
    if self._file.closed:
      return
    self._flush()
    self._file.flush()
    os.fsync(self._file.fileno())
    self._file.close()

  def verify(self):
    """Reads the finished file back and checks it holds exactly the bytes written.

    Compares with the buffers given to `write_framed` (memcmp speed) or a
    cheap checksum per batch of `write` calls (the SHA-256 is computed once,
    while writing); raises OSError naming the file and byte offset otherwise.
    """
    self.finish()
    offset = 0
    with open(self._tmp, "rb") as f:
      for written in self._written:
        if isinstance(written, memoryview):
          block = bytearray()
          for start in range(0, len(written), _READ_BLOCK):
            expected = written[start:start + _READ_BLOCK]
            if len(block) != len(expected):
              block = bytearray(len(expected))
            # bytearray == memoryview is a memcmp (bytes == memoryview is not).
            if f.readinto(block) != len(block) or block != expected:
              raise OSError(f"{self.path}: the bytes read back at byte offset "
                            f"{offset + start} differ from the bytes written")
          offset += len(written)
          continue
        size, check = written
        data = f.read(size)
        if len(data) != size or zlib.crc32(data) != check:
          raise OSError(f"{self.path}: the bytes read back at byte offset {offset} differ "
                        "from the bytes written")
        offset += size
      if f.read(1):
        raise OSError(f"{self.path}: unexpected bytes after byte offset {offset}")

  def close(self):
    """`finish()`, then gives the file its final name."""
    self.finish()
    os.replace(self._tmp, self.path)

  def abort(self):
    """Drops the temporary file."""
    self._file.close()
    if os.path.exists(self._tmp):
      os.remove(self._tmp)


def digest(path: str) -> tuple[int, str]:
  """Walks a TFRecord file's framing; returns `(num_records, sha256 hex)`.

  Reads in large blocks, so it runs at disk speed. CRCs are not checked here
  (`iter_records(check_crc=True)` does).

  Raises:
    ValueError: the framing runs past the end of the file (truncated).
  """
  sha = hashlib.sha256()
  size = os.path.getsize(path)
  count, next_record, position = 0, 0, 0
  tail = b""
  with open(path, "rb") as f:
    while True:
      block = f.read(_READ_BLOCK)
      if not block:
        break
      sha.update(block)
      data = tail + block
      base = position - len(tail)
      while next_record + 8 <= base + len(data):
        length = _U64.unpack_from(data, next_record - base)[0]
        next_record += 16 + length
        count += 1
      keep = max(0, next_record - base)
      tail = data[keep:] if keep < len(data) else b""
      position += len(block)
  if next_record != size:
    raise ValueError(f"{path}: truncated TFRecord: the record starting before byte offset "
                     f"{min(next_record, size)} does not fit in the file ({size} bytes)")
  return count, sha.hexdigest()


def iter_records(path: str, check_crc: bool = False) -> Iterator[bytes]:
  """Yields the records of a TFRecord file (optionally checking every CRC)."""
  with open(path, "rb") as f:
    offset = 0
    while True:
      head = f.read(12)
      if not head:
        return
      if len(head) < 12:
        raise ValueError(f"{path}: truncated record header at byte offset {offset}")
      length = _U64.unpack_from(head)[0]
      body = f.read(length + 4)
      if len(body) < length + 4:
        raise ValueError(f"{path}: truncated record at byte offset {offset}")
      record = body[:length]
      if check_crc:
        want = struct.unpack("<I", head[8:]) + struct.unpack("<I", body[length:])
        got = tuple(int(c) for c in crc32c.masked_crc32c_many([head[:8], record]))
        if got != want:
          raise ValueError(f"{path}: CRC mismatch in the record at byte offset {offset}")
      yield record
      offset += 16 + length


def decode_example(record: bytes) -> dict:
  """Minimal `tf.train.Example` parser for tfface's own schema (inspection, tests)."""
  out = {}
  features, _ = _read_field(record, 0)
  pos = 0
  while pos < len(features):
    entry, pos = _read_field(features, pos)
    name, after = _read_field(entry, 0)
    feature, _ = _read_field(entry, after)
    kind = feature[0]
    inner, _ = _read_field(feature, 0)
    value, _ = _read_field(inner, 0)
    out[name.decode()] = value if kind == 0x0A else _read_varint(value, 0)[0]
  return out


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  shift = value = 0
  while True:
    byte = data[pos]
    value |= (byte & 0x7F) << shift
    pos += 1
    shift += 7
    if byte < 0x80:
      return (value - (1 << 64) if value >= 1 << 63 else value), pos


def _read_field(data: bytes, pos: int) -> tuple[bytes, int]:
  """Reads a length-delimited field at `pos` (tag byte, varint length, bytes)."""
  length, start = _read_varint(data, pos + 1)
  return data[start:start + length], start + length


def tfrecord_files(directory: str) -> list[str]:
  """The shard files of a TFRecord directory, sorted."""
  return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                if f.endswith(".tfrecord"))
