"""tfface's `tf.train.Example`s framed as TFRecords, a whole shard at a time, with numpy.

The library path, `tf.train.Example(...).SerializeToString()` written by
`tf.io.TFRecordWriter`, costs Python objects and calls per record and needs
TensorFlow in every transcode worker; `benchmarks/transcode.py` times both
paths in the same run (see docs/data.md for the figures). A shard's records
differ only in a few varints (lengths, label, key) around the image, so here
the bytes around every image of a shard are laid out at once: varints as
(records, width) byte matrices, each written as padded rows (`_put`).
The images then go into the slots `layout` leaves and the CRCs are added
(`fill`, from a buffer holding the images; or the caller copies them and
calls `seal`). The result is byte for byte what the library
path writes with `SerializeToString(deterministic=True)` (map entries in key
order); tests/test_transcode.py compares the two.
"""
import dataclasses

import google_crc32c
import numpy as np

from tfface.data.tfrecord import framing
from tfface.data.tfrecord import schema

try:  # the C loop of `fill`, built by setup.py where a C compiler is found
  from tfface.data.tfrecord import _framer
except ImportError:
  _framer = None
# `fill` runs in C (tfface/data/tfrecord/_framer.c) when the extension was
# built and the CPU has a CRC-32C instruction (x86-64 SSE4.2); otherwise
# in Python, with the same bytes (tests/test_transcode.py runs both).
NATIVE = _framer is not None and _framer.HARDWARE


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Protobuf varints of int64 values: `(bytes (n, w) uint8, widths (n,))`.

  `w` is the widest varint among the values (fewer columns, less work);
  negative values take 10 bytes (two's complement), as in protobuf.
  """
  v = np.asarray(values, dtype=np.int64).view(np.uint64)
  top = int(v.max()) if len(v) else 0
  columns = max(1, -(-top.bit_length() // 7))
  shifted = v[:, None] >> (np.uint64(7) * np.arange(columns, dtype=np.uint64))
  widths = np.maximum(1, np.count_nonzero(shifted, axis=1))  # groups up to the top bit
  more = np.arange(columns) < (widths - 1)[:, None]  # continuation bit
  return ((shifted & np.uint64(0x7F)) | (more * np.uint64(0x80))).astype(np.uint8), widths


def _table(entries: list) -> tuple[np.ndarray, np.ndarray]:
  """Byte strings (None allowed) as a zero-padded matrix and their lengths."""
  width = max(len(e or b"") for e in entries)
  matrix = np.zeros((len(entries), width), dtype=np.uint8)
  for i, e in enumerate(entries):
    matrix[i, :len(e or b"")] = np.frombuffer(e or b"", dtype=np.uint8)
  return matrix, np.array([len(e or b"") for e in entries])


def _int64_entry_heads(name: str) -> list[bytes | None]:
  """Per varint width n (1..10): the bytes of an int64 map entry before its value."""
  key = name.encode()
  # {1: name, 2: Feature{3: Int64List{1: packed value}}}; every length < 128.
  return [None] + [bytes((0x0A, 2 + len(key) + 6 + n, 0x0A, len(key))) + key
                   + bytes((0x12, 4 + n, 0x1A, 2 + n, 0x0A, n)) for n in range(1, 11)]


# Map entries in key order, as deterministic serialization writes them:
# image/class/label, image/encoded, image/source_key.
_LABEL_HEAD_BYTES = _int64_entry_heads(schema.FEATURE_LABEL)
_KEY_HEAD_BYTES = _int64_entry_heads(schema.FEATURE_KEY)
_LABEL_HEADS = _table(_LABEL_HEAD_BYTES)  # indexed by the label varint width
_KEY_HEADS = _table(_KEY_HEAD_BYTES)
# {1: name, then the Feature tag}
_IMAGE_HEAD = bytes((0x0A, len(schema.FEATURE_IMAGE))) + schema.FEATURE_IMAGE.encode() + b"\x12"


def _constant(data: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
  row = np.frombuffer(data, dtype=np.uint8)
  return np.broadcast_to(row, (n, len(row))), np.full(n, len(row))


# The most bytes around one image: framing 16, tags 4, 7 varints of up to 10
# bytes, feature names.
_RECORD_OVERHEAD = framing.OVERHEAD + 4 + 7 * 10 + len(_LABEL_HEAD_BYTES[10]) + len(
    _KEY_HEAD_BYTES[10]) + len(_IMAGE_HEAD)


def size_bound(image_lengths: np.ndarray) -> int:
  """An upper bound of the bytes `layout` needs for images of these sizes."""
  return int(np.sum(image_lengths)) + _RECORD_OVERHEAD * len(image_lengths)


@dataclasses.dataclass
class Layout:
  """A buffer of framed records whose image bytes and CRCs are still to be filled."""

  buffer: bytearray | memoryview
  image_at: np.ndarray  # where each image's bytes go
  example_start: np.ndarray  # [start, end) of each serialized Example
  example_end: np.ndarray


def layout(image_lengths, labels, keys, scratch=None) -> Layout:
  """Lays out the TFRecords of Examples `(image, label, key)` given the image sizes.

  Args:
    image_lengths, labels, keys: int64 arrays, one entry per record, in
      write order.
    scratch: optional reusable memory: when large enough, the buffer is its
      beginning (a memoryview), which saves page faults on fresh memory for
      every shard. Every byte of it is overwritten (records tile the buffer).

  Returns:
    A `Layout`: every byte except the images and the Example CRCs is set
    (length, its CRC, the Example fields around the image).
  """
  n_image = np.asarray(image_lengths, dtype=np.int64)
  count = len(n_image)
  v_label, w_label = varints(labels)
  v_key, w_key = varints(keys)
  v_image, w_image = varints(n_image)
  # Message sizes from the inside out.
  bytes_list = 1 + w_image + n_image
  v_bytes_list, w_bytes_list = varints(bytes_list)
  feature = 1 + w_bytes_list + bytes_list
  v_feature, w_feature = varints(feature)
  entry = len(_IMAGE_HEAD) + w_feature + feature
  v_entry, w_entry = varints(entry)
  label_heads = (_LABEL_HEADS[0][w_label], _LABEL_HEADS[1][w_label])
  key_heads = (_KEY_HEADS[0][w_key], _KEY_HEADS[1][w_key])
  features = label_heads[1] + w_label + 1 + w_entry + entry + key_heads[1] + w_key
  v_features, w_features = varints(features)
  example = 1 + w_features + features
  tag = _constant(b"\x0a", count)
  length = example.astype("<u8").view(np.uint8).reshape(count, 8)
  length_crc = framing.mask(crc32c_rows(length)).astype("<u4").view(np.uint8)
  head = [(length, np.full(count, 8)), (length_crc.reshape(count, 4), np.full(count, 4)),
          tag, (v_features, w_features), label_heads, (v_label, w_label), tag,
          (v_entry, w_entry), _constant(_IMAGE_HEAD, count), (v_feature, w_feature), tag,
          (v_bytes_list, w_bytes_list), tag, (v_image, w_image)]
  tail = [key_heads, (v_key, w_key)]
  head_size = sum(widths for _, widths in head)
  tail_size = sum(widths for _, widths in tail)
  sizes = head_size + n_image + tail_size + 4  # + the Example's CRC
  start = np.cumsum(sizes) - sizes
  total = int(sizes.sum())
  # Room for the padding of the last record's pieces (see _put).
  room = total + _MAX_PIECE
  memory = (scratch if scratch is not None and len(scratch) >= room
            else np.empty(room, np.uint8))  # records tile the buffer: every byte is written
  image_at = start + head_size
  # Pieces go in order, each as its padded matrix: a piece's padding lands
  # where the next piece (or the image, or the CRC) is written later. Only
  # the tail's padding can reach into the next record's length field: the
  # length and its CRC are written last.
  at = start + 12
  for piece in head[2:]:
    at = _put(memory, at, *piece)
  at = image_at + n_image
  for piece in tail:
    at = _put(memory, at, *piece)
  _put(memory, start, *head[0])
  _put(memory, start + 8, *head[1])
  buffer = memoryview(memory)[:total]
  return Layout(buffer, image_at, start + 12, image_at + n_image + tail_size)


_MAX_PIECE = max(10, len(_LABEL_HEAD_BYTES[10]), len(_KEY_HEAD_BYTES[10]), len(_IMAGE_HEAD))


def _put(memory: np.ndarray, at: np.ndarray, matrix: np.ndarray,
         widths: np.ndarray) -> np.ndarray:
  """Writes row i of `matrix` (all its columns) to `memory[at[i]:]`; returns `at + widths`.

  Rows are written whole, padding included, by one numpy assignment into
  `byte_rows(memory)`: a row copy each, where a flat byte scatter built an
  index per byte. Records are longer than a row, so rows never overlap one
  another.
  """
  byte_rows(memory, matrix.shape[1], writeable=True)[at] = matrix
  return at + widths


def byte_rows(memory: np.ndarray, width: int, writeable: bool = False) -> np.ndarray:
  """A view of the uint8 array `memory` as overlapping rows of `width` bytes,
  row i starting at byte i: `byte_rows(m, w)[at]` reads (or, writeable,
  writes) `m[at[k]:at[k] + w]` for every k with one row copy each."""
  return np.lib.stride_tricks.as_strided(memory, shape=(len(memory) - width + 1, width),
                                         strides=(1, 1), writeable=writeable)


def _crc32c_table() -> np.ndarray:
  """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of each byte value."""
  crc = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    crc = np.where(crc & 1, (crc >> np.uint32(1)) ^ np.uint32(0x82F63B78), crc >> np.uint32(1))
  return crc


_CRC32C_TABLE = _crc32c_table()


def crc32c_rows(rows: np.ndarray) -> np.ndarray:
  """CRC-32C of each row of a (n, w) uint8 matrix, a byte column at a time for all rows.

  For short rows, such as the 8-byte length fields: a google-crc32c call per
  row measured 0.14 us per record (mostly the interpreter), this 0.02 us (a
  few numpy operations per column, for all rows at once).
  """
  crc = np.full(len(rows), 0xFFFFFFFF, dtype=np.uint32)
  for column in np.asarray(rows, dtype=np.uint8).T:
    crc = _CRC32C_TABLE[(crc ^ column) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
  return ~crc


def _crc32c_each(messages) -> np.ndarray:
  """CRC-32C of each message (uint8 numpy arrays: google-crc32c reads them in place)."""
  return np.fromiter(map(google_crc32c.value, messages), dtype=np.uint32)


def seal(framed: Layout, first: int = 0, stop: int | None = None):
  """Writes the masked CRC-32C of the Examples `first` to `stop` (default all).

  Call once their images are in.
  """
  data = np.frombuffer(framed.buffer, dtype=np.uint8)
  starts = framed.example_start[first:stop]
  ends = framed.example_end[first:stop]
  # map() rather than a generator expression: 0.1-0.3 us less per record.
  crcs = framing.mask(_crc32c_each(map(data.__getitem__, map(
      slice, starts.tolist(), ends.tolist()))))
  _put(data, ends, crcs.astype("<u4").view(np.uint8).reshape(-1, 4), 4)


def fill(framed: Layout, source: np.ndarray, source_at: np.ndarray, lengths: np.ndarray,
         first: int = 0, stop: int | None = None, native: bool | None = None):
  """Copies images into the Examples `first` to `stop`, then seals them (`seal`).

  Image j is `source[source_at[j]:source_at[j] + lengths[j]]` (lengths of 0
  copy nothing: images put in place otherwise). In C when `NATIVE` (one
  call per chunk, about a microsecond per record less than the Python loop;
  docs/data.md, "Speed"), else in Python; `native=False` forces Python.

  Raises:
    ValueError: (C path) an image or Example that does not fit its buffer.
  """
  stop = len(framed.image_at) if stop is None else stop
  native = NATIVE if native is None else native
  if native and _framer is None:
    raise RuntimeError("the C framer is not built: `pip install -e .` with a C compiler")
  if native:
    _framer.fill(framed.buffer, source, framed.image_at, source_at, lengths,
                 framed.example_start, framed.example_end, first, stop)
    return
  out, data = memoryview(framed.buffer), memoryview(source)
  for dst, src, n in zip(framed.image_at[first:stop].tolist(), source_at[first:stop].tolist(),
                         lengths[first:stop].tolist()):
    out[dst:dst + n] = data[src:src + n]
  seal(framed, first, stop)


def record_ends(framed: Layout) -> np.ndarray:
  """Where each framed record ends in the buffer (the next one starts there)."""
  return framed.example_end + 4
