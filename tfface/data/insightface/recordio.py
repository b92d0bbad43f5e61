"""MXNet RecordIO (`.rec` + `.idx`) in pure Python: no mxnet, no numpy<2.

A `.rec` file is a sequence of records, each `uint32 magic`, `uint32 lrecord`,
the payload and zero padding to a multiple of 4 bytes. The top 3 bits of
`lrecord` are a continuation flag and the low 29 bits the part length: the
writer (dmlc-core) splits a payload wherever the magic number occurs at a
4-byte aligned position inside it, dropping those 4 bytes; a reader rejoins the
parts and re-inserts the magic. The `.idx` is text, `key<TAB>byte_offset`.

Payloads of image datasets start with an `IRHeader` (`flag, label, id, id2`,
struct `<IfQQ`); `flag > 0` means that many float32 labels follow it.
"""
import collections
import os
import struct
import warnings
from typing import BinaryIO, Iterator

import numpy as np

from tfface import atomic

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
_HEAD = struct.Struct("<II")
_MAX_PART = 1 << 29
# Continuation flags of a record part.
_WHOLE, _FIRST, _MIDDLE, _LAST = 0, 1, 2, 3

IRHeader = collections.namedtuple("IRHeader", ["flag", "label", "id", "id2"])
_IR_STRUCT = struct.Struct("<IfQQ")
IR_SIZE = _IR_STRUCT.size  # 24 bytes


def pack_header(header: IRHeader, payload: bytes = b"") -> bytes:
  """Packs an `IRHeader` and a payload the way `mxnet.recordio.pack` does.

  Args:
    header: `IRHeader(flag, label, id, id2)`; `label` is a number (stored in
      the header, flag forced to 0) or a sequence (stored as float32 after the
      header, flag set to its length).
    payload: the bytes that follow (usually an encoded image).

  Returns:
    The record payload as bytes.
  """
  flag, label, key, key2 = header
  if np.ndim(label) == 0:
    return _IR_STRUCT.pack(0, float(label), key, key2) + payload
  labels = np.asarray(label, dtype="<f4").reshape(-1)
  return _IR_STRUCT.pack(labels.size, 0.0, key, key2) + labels.tobytes() + payload


def unpack_header(record: bytes, where: str = "<record>") -> tuple[IRHeader, bytes]:
  """Splits a record payload into its `IRHeader` and the bytes after the labels.

  Args:
    record: the payload of one record.
    where: file and place for error messages.

  Returns:
    `(header, rest)`; `header.label` is a float for `flag == 0` and a float32
    numpy array of `flag` values otherwise.

  Raises:
    ValueError: the payload is shorter than its header says.
  """
  if len(record) < IR_SIZE:
    raise ValueError(f"{where}: record of {len(record)} bytes is shorter than the "
                     f"{IR_SIZE}-byte IRHeader")
  flag, label, key, key2 = _IR_STRUCT.unpack_from(record)
  if flag == 0:
    return IRHeader(0, label, key, key2), record[IR_SIZE:]
  end = IR_SIZE + 4 * flag
  if len(record) < end:
    raise ValueError(f"{where}: IRHeader flag {flag} announces {flag} float32 labels "
                     f"but the record has only {len(record) - IR_SIZE} bytes after it")
  labels = np.frombuffer(record, dtype="<f4", count=flag, offset=IR_SIZE)
  return IRHeader(flag, labels, key, key2), record[end:]


def encode_record(payload: bytes) -> bytes:
  """Frames one payload as dmlc-core does, splitting it at aligned magic numbers."""
  size = len(payload)
  if size >= _MAX_PART:
    raise ValueError(f"RecordIO records must be under 2**29 bytes; got {size}")
  parts = []
  start = 0
  # dmlc-core only looks for the magic at 4-byte aligned offsets.
  pos = payload.find(_MAGIC_BYTES)
  while pos != -1 and pos + 4 <= size - size % 4:
    if pos % 4 == 0:
      parts.append(payload[start:pos])
      start = pos + 4
      pos = payload.find(_MAGIC_BYTES, start)
    else:
      pos = payload.find(_MAGIC_BYTES, pos + 1)
  parts.append(payload[start:])
  out = []
  for i, part in enumerate(parts):
    if len(parts) == 1:
      cflag = _WHOLE
    else:
      cflag = _FIRST if i == 0 else (_LAST if i == len(parts) - 1 else _MIDDLE)
    out.append(struct.pack("<II", MAGIC, (cflag << 29) | len(part)))
    out.append(part)
  out.append(b"\0" * (-size % 4))
  return b"".join(out)


class RecordIOReader:
  """Reads records of one `.rec` file, sequentially or at byte offsets.

  Sequential iteration streams through the file with a bounded buffer, so
  memory does not grow with the file. Every error names the file and the byte
  offset of the record at fault.
  """

  def __init__(self, path: str, buffer_size: int = 1 << 20):
    self.path = path
    self._file: BinaryIO = open(path, "rb", buffering=buffer_size)
    self.size = os.fstat(self._file.fileno()).st_size
    self._guess = 16 << 10  # bytes read_at() fetches at once; grows with the records

  def close(self):
    self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _read_part(self, offset: int) -> tuple[int, bytes, int]:
    """Reads one part at `offset`; returns (cflag, data, offset of the next part)."""
    head = self._file.read(8)
    if len(head) < 8:
      raise ValueError(f"{self.path}: truncated record header at byte offset {offset} "
                       f"(file size {self.size})")
    magic, lrecord = struct.unpack("<II", head)
    if magic != MAGIC:
      raise ValueError(f"{self.path}: bad magic 0x{magic:08x} at byte offset {offset} "
                       f"(expected 0x{MAGIC:08x}); not a RecordIO record boundary")
    cflag, length = lrecord >> 29, lrecord & LENGTH_MASK
    padded = length + (-length % 4)
    data = self._file.read(padded)
    if len(data) < padded:
      raise ValueError(f"{self.path}: truncated record at byte offset {offset}: it "
                       f"announces {length} bytes but only {len(data)} remain")
    return cflag, data[:length] if padded != length else data, offset + 8 + padded

  def _read_record(self, offset: int) -> tuple[bytes, int]:
    """Reads the (possibly split) record at the current position == `offset`."""
    start = offset
    cflag, data, offset = self._read_part(offset)
    if cflag == _WHOLE:
      return data, offset
    if cflag != _FIRST:
      raise ValueError(f"{self.path}: byte offset {start} holds a continuation part "
                       f"(cflag {cflag}), not the start of a record")
    pieces = [data]
    while True:
      part_offset = offset
      cflag, data, offset = self._read_part(offset)
      if cflag not in (_MIDDLE, _LAST):
        raise ValueError(f"{self.path}: split record at byte offset {start} is broken: "
                         f"part at byte offset {part_offset} has cflag {cflag}")
      pieces.append(data)
      if cflag == _LAST:
        return _MAGIC_BYTES.join(pieces), offset

  def read_at(self, offset: int) -> bytes:
    """Returns the payload of the record that starts at byte `offset`."""
    if not 0 <= offset < self.size:
      raise ValueError(f"{self.path}: byte offset {offset} is outside the file "
                       f"(size {self.size})")
    # Fast path: one pread() for a whole unsplit record. Random access through
    # the buffered file would read (and copy) a full buffer per record.
    data = os.pread(self._file.fileno(), self._guess, offset)
    if len(data) >= 8:
      magic, lrecord = _HEAD.unpack_from(data)
      length = lrecord & LENGTH_MASK
      if magic == MAGIC and lrecord >> 29 == _WHOLE and 8 + length + (-length % 4) <= len(data):
        self._guess = max(self._guess, 2 * length + 16)
        return data[8:8 + length]
    self._file.seek(offset)
    return self._read_record(offset)[0]

  def __iter__(self) -> Iterator[tuple[int, bytes]]:
    """Yields `(byte_offset, payload)` for every record, in file order."""
    self._file.seek(0)
    offset = 0
    while offset < self.size:
      payload, next_offset = self._read_record(offset)
      yield offset, payload
      # Callers may read_at() between steps: restore the sequential position.
      if self._file.tell() != next_offset:
        self._file.seek(next_offset)
      offset = next_offset


class RecordIOWriter(atomic.CommitOnSuccess):
  """Writes a `.rec` (and optionally its `.idx`) under temporary names.

  The files get their final names only on a successful `close()` (or leaving
  a `with` block without an exception), so an interrupted writer never leaves
  a `.rec` that looks complete.
  """

  def __init__(self, path: str, idx_path: str | None = None):
    self.path, self.idx_path = path, idx_path
    self._tmp = atomic.temporary_name(path)
    self._file = open(self._tmp, "wb")
    self._idx_lines: list[str] = []
    self.offset = 0

  def write(self, payload: bytes, key: int | None = None) -> int:
    """Appends one record; returns its byte offset. `key` goes to the `.idx`."""
    offset = self.offset
    data = encode_record(payload)
    self._file.write(data)
    self.offset += len(data)
    if key is not None:
      self._idx_lines.append(f"{key}\t{offset}\n")
    return offset

  def patch(self, offset: int, payload: bytes):
    """Overwrites the unsplit record at `offset` with a payload of the same size."""
    data = encode_record(payload)
    self._file.flush()
    with open(self._tmp, "r+b") as f:
      f.seek(offset)
      if len(f.read(len(data))) != len(data):
        raise ValueError(f"{self._tmp}: cannot patch past the end at {offset}")
      f.seek(offset)
      f.write(data)

  def close(self):
    """Flushes and renames the files to their final names."""
    if self._file.closed:
      return
    self._file.close()
    if self.idx_path is not None:
      write_idx(self.idx_path, self._idx_lines)
    os.replace(self._tmp, self.path)

  def abort(self):
    """Drops everything written so far."""
    if not self._file.closed:
      self._file.close()
    if os.path.exists(self._tmp):
      os.remove(self._tmp)


def write_idx(path: str, lines: list[str]):
  """Writes `.idx` lines atomically."""
  atomic.write_text(path, "".join(lines))


def _read_idx_fast(path: str) -> tuple[np.ndarray, np.ndarray] | None:
  """`read_idx` for well-formed files at C speed; None where a line needs a closer look.

  An `.idx` has millions of lines for large datasets; splitting the whole
  file at once and checking the field count per line with numpy is about 10x
  faster than a Python loop. Lines are split at '\n' and '\r' like the
  text-mode reader; anything unusual (non-ASCII, a line without exactly two
  fields) falls back to it for the error message.
  """
  with open(path, "rb") as f:
    data = f.read()
  if not data.isascii():
    return None
  chars = np.frombuffer(data, dtype=np.uint8)
  newline = (chars == 10) | (chars == 13)
  blank = newline | (chars == 32) | ((chars >= 9) & (chars <= 13))
  starts = ~blank & np.r_[True, blank[:-1]]  # first character of each field
  fields_per_line = np.bincount(np.cumsum(newline)[starts])
  if not np.all((fields_per_line == 0) | (fields_per_line == 2)):
    return None
  ends = ~blank & np.r_[blank[1:], True]  # last character of each field
  digits = (chars >= 48) & (chars <= 57)
  # Plain decimal fields of up to 18 digits (an optional sign first) fit in
  # int64 and parse alike with int() and numpy's text parser, which is 8x
  # faster than splitting (30 vs 4 ms for 100,000 lines); the rest goes to
  # the exact reader, which names the line.
  sign = ((chars == 43) | (chars == 45)) & starts
  if (np.count_nonzero(~blank & ~digits & ~sign)
      or np.any(np.flatnonzero(ends) - np.flatnonzero(starts) >= 18 + 1)):
    return None
  with warnings.catch_warnings():  # a field it cannot read warns, and is caught below
    warnings.simplefilter("ignore", DeprecationWarning)
    numbers = np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ")
  if np.count_nonzero(starts) != len(numbers):
    return None
  numbers = numbers.reshape(-1, 2)
  return numbers[:, 0].copy(), numbers[:, 1].copy()


def read_idx(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Parses an `.idx` file into int64 arrays `(keys, offsets)` in file order.

  Raises:
    ValueError: a malformed line (named by its line number) or a repeated key.
  """
  fast = _read_idx_fast(path)
  if fast is not None:
    keys_arr, offsets_arr = fast
    # Keys are usually ascending, which proves them unique without a sort.
    if np.all(np.diff(keys_arr) > 0) or len(np.unique(keys_arr)) == len(keys_arr):
      return keys_arr, offsets_arr
  keys, offsets = [], []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      try:
        if len(fields) != 2:
          raise ValueError
        key, offset = int(fields[0]), int(fields[1])
        if not (-2**63 <= key < 2**63 and -2**63 <= offset < 2**63):
          raise ValueError  # int64, as the keys and offsets of every reader
        keys.append(key)
        offsets.append(offset)
      except ValueError:
        raise ValueError(f"{path}: line {lineno}: expected 'key<TAB>byte_offset', "
                         f"got {line.rstrip()!r}") from None
  keys_arr = np.asarray(keys, dtype=np.int64)
  offsets_arr = np.asarray(offsets, dtype=np.int64)
  if len(np.unique(keys_arr)) != len(keys_arr):
    values, counts = np.unique(keys_arr, return_counts=True)
    raise ValueError(f"{path}: key {int(values[counts > 1][0])} appears more than once")
  return keys_arr, offsets_arr


def scan_offsets(path: str) -> np.ndarray:
  """Byte offsets of every record of a `.rec` without an `.idx` (one streaming pass)."""
  with RecordIOReader(path) as reader:
    return np.fromiter((offset for offset, _ in reader), dtype=np.int64)


class IndexedRecordIO:
  """Random access by key to a `.rec` through its `.idx` (MXIndexedRecordIO's read side).

  Args:
    rec_path: the `.rec` file.
    idx_path: its `.idx`; None scans the `.rec` once and numbers the records
      0, 1, 2, ... in file order (the keys InsightFace's writers use).

  Raises:
    ValueError: an `.idx` line whose offset lies past the end of the `.rec`,
      is not a multiple of 4 (every record starts at one) or repeats the
      offset of another line.
  """

  def __init__(self, rec_path: str, idx_path: str | None = None):
    self.rec_path, self.idx_path = rec_path, idx_path
    self.reader = RecordIOReader(rec_path)
    if idx_path is None:
      offsets = scan_offsets(rec_path)
      keys = np.arange(len(offsets), dtype=np.int64)
    else:
      keys, offsets = read_idx(idx_path)
      self._check_offsets(keys, offsets)
    order = np.argsort(keys, kind="stable")
    self._entries = order  # _entries[i]: where keys[i] is in the .idx (file order)
    self.keys = keys[order]  # sorted
    self.offsets = offsets[order]  # offsets[i] belongs to keys[i]

  def _line(self, entry: int) -> int:
    """The `.idx` line number of its `entry`-th (0-based) key (blank lines are skipped)."""
    with open(self.idx_path) as f:
      seen = -1
      for lineno, line in enumerate(f, 1):
        if line.split():
          seen += 1
          if seen == entry:
            return lineno
    return entry + 1

  def _check_offsets(self, keys: np.ndarray, offsets: np.ndarray):
    """The checks of `.idx` offsets that need no reading of the `.rec` (vectorized)."""
    def where(i):
      return f"{self.idx_path}: line {self._line(i)}: key {keys[i]}"

    bad = np.flatnonzero((offsets < 0) | (offsets >= self.reader.size))
    if len(bad):
      i = int(bad[0])
      raise ValueError(
          f"{where(i)} has byte offset {offsets[i]}, past the end of {self.rec_path} "
          f"({self.reader.size} bytes): the .rec is truncated or the .idx belongs to "
          "another .rec")
    bad = np.flatnonzero(offsets % 4)
    if len(bad):
      i = int(bad[0])
      raise ValueError(f"{where(i)} at byte offset {offsets[i]} is not where a record starts "
                       f"in {self.rec_path}: records start at multiples of 4 bytes")
    if not np.all(np.diff(offsets) > 0):  # written in file order, they are distinct
      by_offset = np.argsort(offsets, kind="stable")
      same = np.flatnonzero(np.diff(offsets[by_offset]) == 0)
      if len(same):
        i, j = (int(e) for e in by_offset[same[0]:same[0] + 2])
        raise ValueError(f"{self.idx_path}: lines {self._line(i)} and {self._line(j)}: keys "
                         f"{keys[i]} and {keys[j]} both have byte offset {offsets[i]}")

  def _not_a_record_start(self, i: int, before: int | None, after: int | None) -> str:
    """The message for entry `i` (into the sorted keys) whose offset starts no record."""
    around = " and ".join(str(o) for o in (before, after) if o is not None)
    return (f"{self.idx_path}: line {self._line(int(self._entries[i]))}: key {self.keys[i]} "
            f"at byte offset {self.offsets[i]} is not where a record starts in "
            f"{self.rec_path} (the records around it start at {around})")

  def explain_offset(self, offset: int) -> str | None:
    """Why reading at `offset` failed, when the `.idx` is at fault (an error path).

    Reads the records from the nearest lower `.idx` offset on, to see whether
    a record starts at `offset`.

    Returns:
      A message naming the `.idx` line that gives `offset` if that is not
      where a record starts; None if it is (the record there is itself
      broken), if no line gives it, or if that cannot be told.
    """
    if self.idx_path is None:
      return None
    hits = np.flatnonzero(self.offsets == offset)
    if not len(hits):
      return None
    lower = self.offsets[self.offsets < offset]
    position = int(lower.max()) if len(lower) else 0
    before = None
    try:
      with RecordIOReader(self.rec_path) as reader:
        reader._file.seek(position)  # pylint: disable=protected-access
        while position < offset:
          before = position
          position = reader._read_record(position)[1]  # pylint: disable=protected-access
    except ValueError:
      return None
    if position == offset:
      return None
    return self._not_a_record_start(int(hits[0]), before,
                                    position if position < self.reader.size else None)

  def offsets_of(self, keys) -> np.ndarray:
    """Byte offsets of `keys` (array-like); KeyError naming the first missing key."""
    keys = np.asarray(keys, dtype=np.int64)
    pos = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
    missing = (self.keys[pos] != keys) if len(self.keys) else np.ones(len(keys), bool)
    if missing.any():
      key = int(keys[np.argmax(missing)])
      raise KeyError(f"{self.idx_path or self.rec_path}: no record with key {key}")
    return self.offsets[pos]

  def offset_of(self, key: int) -> int:
    """Byte offset of `key` (KeyError naming the `.idx` if absent)."""
    return int(self.offsets_of([key])[0])

  def read_idx(self, key: int) -> bytes:
    """The payload of the record with `key`."""
    return self.reader.read_at(self.offset_of(key))

  def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
    """Streams `(key, byte_offset, payload)` of every record in file order.

    Raises:
      ValueError: a record with no `.idx` entry (its byte offset), or an
        `.idx` offset where no record starts (the `.idx` line): the `.idx`
        does not match the `.rec`.
    """
    by_offset = np.argsort(self.offsets, kind="stable")
    sorted_offsets = self.offsets[by_offset].tolist()
    count, j, previous = len(sorted_offsets), 0, None
    # A record without an entry, reported once the next record start is known:
    # an .idx offset inside that record is the likelier cause, and named first.
    unlisted = None
    with RecordIOReader(self.rec_path) as reader:
      for offset, payload in reader:
        if j < count and sorted_offsets[j] < offset:  # skipped: inside the previous record
          raise ValueError(self._not_a_record_start(int(by_offset[j]), previous, offset))
        if unlisted is not None:
          raise ValueError(self._no_entry(*unlisted, by_offset))
        if j < count and sorted_offsets[j] == offset:
          yield int(self.keys[by_offset[j]]), offset, payload
          j += 1
        else:
          unlisted = (offset, j)
        previous = offset
    if j < count:  # past the start of the last record
      raise ValueError(self._not_a_record_start(int(by_offset[j]), previous, None))
    if unlisted is not None:
      raise ValueError(self._no_entry(*unlisted, by_offset))

  def _no_entry(self, offset: int, j: int, by_offset: np.ndarray) -> str:
    """The message for the record at `offset`, which lies before the j-th .idx offset."""
    around = [int(self.keys[by_offset[i]]) for i in (j - 1, j) if 0 <= i < len(by_offset)]
    message = (f"{self.rec_path}: the record at byte offset {offset} has no entry in "
               f"{self.idx_path} (it lies between the records of "
               f"{' and '.join(f'key {k}' for k in around) or 'no key'}")
    if len(around) == 2 and around[0] < around[1]:
      # A key between its neighbours' (keys in file order) is likely the record's own.
      i = int(np.searchsorted(self.keys, around[0], side="right"))
      if self.keys[i] < around[1]:
        message += (f"; the .idx gives key {self.keys[i]} byte offset {self.offsets[i]} "
                    f"(line {self._line(int(self._entries[i]))})")
    return message + ")"

  def close(self):
    self.reader.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
