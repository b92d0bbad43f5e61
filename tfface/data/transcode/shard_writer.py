"""One transcode worker's job: turn `.rec` records into a group of TFRecord shards.

Runs in worker processes (see `transcode`), so it only needs the `.rec` path
and the records' keys and byte offsets; it never imports TensorFlow. The
`.rec` is mapped into memory; a group's records are located and checked
together, in file order, with numpy (`rec_batch`). Each shard is then laid
out in one buffer (`example_batch`) and, a chunk of about a megabyte at a
time, filled with its images from the mapping and sealed with its CRCs
(`example_batch.fill`, a C loop where the extension is built), digested,
written under a temporary name and read back; it is synced, given a sidecar
and renamed.
"""
import ctypes
import dataclasses
import os

import numpy as np

from tfface import atomic
from tfface.data.insightface import rec as insightface_rec
from tfface.data.insightface import recordio
from tfface.data.tfrecord import digest
from tfface.data.tfrecord import example_batch
from tfface.data.tfrecord import schema
from tfface.data.transcode import rec_batch

# Leading bytes of the image formats tf.io.decode_image reads.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
STATE_DIR = ".rec2tfrecord"  # per-shard sidecars and the plan of a transcode

_counter = None  # shared progress counter of a worker process
# Buffers kept between the groups that one process writes, by name: fresh
# memory costs a page fault per 4 KiB page (and more in a VM whose host
# reclaims the guest's free pages). Freed when the worker process ends.
_reused: dict[str, np.ndarray] = {}
# A chunk as read back from the file, for the check: a bytearray, not one of
# `_buffer`'s arrays, because bytearray.startswith compares with a memcmp.
_read_back = bytearray()
# Bytes of a shard framed, digested, written and read back at a time: they
# stay in the CPU's cache from one step to the next. 64 KiB, 256 KiB and
# 4 MiB measured 0.54-0.58x, 0.84-0.89x and 0.67-0.71x the marginal rate.
CHUNK_BYTES = 1 << 20


def init_worker(counter):
  """Pool initializer: keeps the shared progress counter."""
  global _counter
  _counter = counter


def _buffer(name: str, size: int) -> np.ndarray:
  """A reused uint8 buffer of at least `size` bytes, uninitialized.

  Uninitialized (`np.empty`): `bytearray(size)` would zero it first, which
  costs 8x what filling it does (81 vs 10 ms for 200 MB).
  """
  if len(_reused.get(name, b"")) < size:
    _reused[name] = np.empty(size, np.uint8)
  return _reused[name]


def _report_shared(n: int):
  with _counter.get_lock():
    _counter.value += n


@dataclasses.dataclass
class ShardTask:
  """Everything a worker needs to write shard `index` of `count`."""

  rec_path: str
  output_dir: str
  index: int
  count: int
  keys: np.ndarray  # image keys in write order
  offsets: np.ndarray  # their byte offsets in the .rec
  num_classes: int | None  # labels must lie in [0, num_classes) when known
  num_classes_source: str  # where num_classes came from, for error messages
  # Where each record ends at the latest (next record's offset in the .rec, or
  # its size); bounds what the fast path takes for a record. None: the next
  # offset among the task's own.
  ends: np.ndarray | None = None
  digest_algorithm: str = digest.DEFAULT  # of the shard digests

  @property
  def name(self) -> str:
    return schema.shard_name(self.index, self.count)


def _check_image(task: ShardTask, key: int, offset: int, label, image: bytes) -> bool:
  """True for an image record, False for an identity record; raises on bad payloads."""
  where = f"{task.rec_path}: key {key} at byte offset {offset}"
  if not image.startswith(_IMAGE_SIGNATURES):
    if not image and not isinstance(label, float) and len(label) >= 2:
      return False  # an identity record ([start, end) label, no image): skipped
    raise ValueError(f"{where}: payload is not an image ({len(image)} bytes starting "
                     f"{image[:8].hex() or '(empty)'}); expected JPEG/PNG/GIF/BMP bytes")
  return True


def _read_one(task: ShardTask, reader: recordio.RecordIOReader, key: int,
              offset: int) -> tuple[int, bytes] | None:
  """The exact, record-at-a-time path: `(label, image)`, None for an identity record.

  Raises:
    ValueError: the record is corrupt, not an image or labelled out of range.
  """
  where = f"{task.rec_path}: key {key} at byte offset {offset}"
  header, image = recordio.unpack_header(reader.read_at(offset), where)
  if not _check_image(task, key, offset, header.label, image):
    return None
  label = int(header.label) if header.flag == 0 else insightface_rec.class_of(header.label)
  if label < 0 or (task.num_classes is not None and label >= task.num_classes):
    raise ValueError(f"{where}: label {label} is outside [0, {task.num_classes}) "
                     f"({task.num_classes_source})")
  return label, image


def _has_signature(signature: np.ndarray) -> np.ndarray:
  """Rows of leading image bytes that start with a known image format."""
  found = np.zeros(len(signature), dtype=bool)
  for magic in _IMAGE_SIGNATURES:
    found |= (signature[:, :len(magic)] == np.frombuffer(magic, dtype=np.uint8)).all(axis=1)
  return found


def _record_ends(tasks: list[ShardTask], order: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Upper bounds of the ends of the file-ordered records (`offsets`, ascending)."""
  if all(t.ends is not None for t in tasks):
    return np.concatenate([t.ends for t in tasks])[order]
  # Records never overlap, so the next offset bounds a record; the last is
  # bounded by the file size.
  return np.append(offsets[1:], os.path.getsize(tasks[0].rec_path))


def _read_group(tasks: list[ShardTask]):
  """Reads and checks the records of all `tasks`, in file order.

  The vectorized `rec_batch` path covers plain records with a valid image
  and label; the rest (split records, identity records, anything suspect)
  go through `_read_one` in file order, so the first bad record raises the
  same error as a record-at-a-time reader would.

  Returns:
    `(order, images, labels, is_image, slow, keys)`: `order[j]` is the index
    (into the tasks' concatenated records) of the j-th record in file order;
    the rest is per file-ordered record: `rec_batch.Images`, int64 labels,
    whether it is an image, `{index: image bytes}` of the images read the
    exact way, and the keys.
  """
  task = tasks[0]
  offsets = np.concatenate([t.offsets for t in tasks])
  keys = np.concatenate([t.keys for t in tasks])
  order = np.argsort(offsets, kind="stable")
  offsets, keys = offsets[order], keys[order]
  ends = _record_ends(tasks, order, offsets)
  images = rec_batch.map_images(rec_batch.map_file(task.rec_path), offsets, ends)
  # float -> int64 truncates toward zero like int(); huge or non-finite labels
  # stay on the exact path (int() raises there, as it always did).
  finite = np.abs(images.label) < 2.0**62
  labels = np.where(finite, images.label, 0).astype(np.int64)
  good = finite & (labels >= 0)
  if task.num_classes is not None:
    good &= labels < task.num_classes
  good &= images.ok & _has_signature(images.signature)
  is_image = np.ones(len(offsets), dtype=bool)
  slow = {}
  suspects = np.flatnonzero(~good).tolist()
  if suspects:
    with recordio.RecordIOReader(task.rec_path) as reader:
      for i in suspects:
        read = _read_one(task, reader, int(keys[i]), int(offsets[i]))
        if read is None:
          is_image[i] = False
        else:
          labels[i], slow[i] = read
  return order, images, labels, is_image, slow, keys


def _chunks(ends: np.ndarray, size: int) -> list[tuple[int, int]]:
  """`[first, stop)` record ranges of about `size` bytes, for records ending at `ends`."""
  cuts = np.unique(np.searchsorted(ends, np.arange(size, int(ends[-1]), size), side="right"))
  bounds = [0] + [int(c) for c in cuts if 0 < c < len(ends)] + [len(ends)]
  return list(zip(bounds[:-1], bounds[1:]))


def write_shard_file(path: str, chosen: np.ndarray, images: rec_batch.Images,
                     labels: np.ndarray, keys: np.ndarray, slow: dict,
                     algorithm: str) -> tuple[int, str]:
  """Writes the file-ordered records `chosen`, in that order, as TFRecords at `path`.

  The bytes around every image are laid out at once (`example_batch`); the
  rest goes a chunk of about `CHUNK_BYTES` at a time, while the chunk is in
  the CPU's cache: the images copied in from the mapped `.rec` and the CRCs
  (`example_batch.fill`), the digest, the write, and the check that the
  file reads back the same.
  The disk starts on each chunk at once (`_start_writeback`); the file is
  synced at the end. Doing each step over the whole shard, as 0.3.0 did,
  read a 34 MB buffer back from memory four times: the marginal rate was
  1.72-1.88x lower (docs/data.md, "Speed"; the benchmark's `whole_shard`).

  Returns:
    The file's size and hex digest.

  Raises:
    OSError: the bytes read back differ from those written, or the file
      holds more (names the byte offset).
  """
  staged = images.length[chosen]  # 0 for the images read the exact way
  lengths = staged.copy()
  slow_rows = {j: slow[i] for j, i in enumerate(chosen.tolist()) if i in slow}
  for j, image in slow_rows.items():
    lengths[j] = len(image)
  bound = example_batch.size_bound(lengths)
  framed = example_batch.layout(lengths, labels[chosen], keys[chosen],
                                _buffer("framing", bound))
  out, image_at, source_at = memoryview(framed.buffer), framed.image_at, images.at[chosen]
  for j, image in slow_rows.items():  # few: put in place first
    out[image_at[j]:image_at[j] + len(image)] = image
  ends = example_batch.record_ends(framed)
  hasher = digest.new(algorithm)
  with open(path, "w+b", buffering=0) as f:
    start = 0
    for first, stop in (_chunks(ends, CHUNK_BYTES) if len(chosen) else []):
      example_batch.fill(framed, images.data, source_at, staged, first, stop)
      end = int(ends[stop - 1])
      piece = out[start:end]
      hasher.update(piece)
      _write_all(f, piece)
      _start_writeback(f.fileno(), start, end - start)
      _check_read_back(path, f.fileno(), piece, start)
      start = end
    if os.fstat(f.fileno()).st_size != len(out):
      raise OSError(f"{path}: unexpected bytes after byte offset {len(out)}")
    os.fsync(f.fileno())
  return len(out), hasher.hexdigest()


def _write_all(f, data: memoryview):
  """`f.write` until every byte is written (an unbuffered write may write fewer)."""
  while data:
    data = data[f.write(data):]


def write_shards(tasks: list[ShardTask], report=None) -> list[dict]:
  """Reads the records of a group of shards once, then writes each shard.

  Each shard is written to a temporary name, digested, read back and
  checked, given a sidecar, and renamed; shards finished before an error
  stay complete.

  Args:
    tasks: `ShardTask`s of the same `.rec` (a group, `transcode.GROUP_BYTES`).
    report: callable `(num_records)` called after each shard with its count
      of source records (progress); defaults to the counter shared with the
      parent process.

  Returns:
    Each shard's sidecar: file, num_records, num_bytes, digest, min/max label.

  Raises:
    ValueError: a record that is corrupt, not an image, or labelled outside
      `[0, num_classes)`; the message names the file, key and byte offset.
  """
  report = report or (_report_shared if _counter is not None else None)
  order, images, labels, is_image, slow, keys = _read_group(tasks)
  # where[g]: file-ordered index of record g of the concatenated tasks.
  where = np.empty_like(order)
  where[order] = np.arange(len(order))
  results, first = [], 0
  for task in tasks:
    chosen = where[first:first + len(task.keys)]  # write order
    first += len(task.keys)
    chosen = chosen[is_image[chosen]]
    results.append(_commit(task, chosen, images, labels, keys, slow))
    if report:
      report(len(task.keys))
  return results


def write_shard(task: ShardTask, report=None) -> dict:
  """`write_shards` for a single shard."""
  return write_shards([task], report)[0]


def _writeback_starter():
  """`start(fd, offset, length)`: starts writing a file range to disk, without waiting.

  Linux's `sync_file_range(SYNC_FILE_RANGE_WRITE)` (not in `os`); a no-op
  where the C library lacks it. The `fsync` at the end still waits for every
  byte: this only lets the disk start while the CPU frames the next chunk.
  """
  try:
    call = ctypes.CDLL(None, use_errno=True).sync_file_range
  except (AttributeError, OSError):
    return lambda fd, offset, length: None
  call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
  return lambda fd, offset, length: call(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE


_start_writeback = _writeback_starter()


def _check_read_back(path: str, fd: int, expected: memoryview, offset: int):
  """Raises OSError unless the file (`fd`, named `path`) holds `expected` at `offset`."""
  global _read_back
  if len(_read_back) < len(expected):
    _read_back = bytearray(len(expected))
  with memoryview(_read_back)[:len(expected)] as block:
    read = os.preadv(fd, [block], offset)
  # bytearray.startswith is a memcmp (memoryview == memoryview is not).
  if read != len(expected) or not _read_back.startswith(expected):
    raise OSError(f"{path}: the bytes read back at byte offset {offset} (a chunk of "
                  f"{len(expected)}) differ from the bytes written")


def _commit(task: ShardTask, chosen: np.ndarray, images: rec_batch.Images,
            labels: np.ndarray, keys: np.ndarray, slow: dict) -> dict:
  """Writes and checks one shard under a temporary name, then its sidecar, then renames it."""
  path = os.path.join(task.output_dir, task.name)
  with atomic.replacing(path) as tmp:
    num_bytes, hexdigest = write_shard_file(tmp, chosen, images, labels, keys, slow,
                                            task.digest_algorithm)
    chosen_labels = labels[chosen]
    result = {"file": task.name, "num_records": len(chosen), "num_bytes": num_bytes,
              "digest": hexdigest,
              "min_label": int(chosen_labels.min()) if len(chosen) else None,
              "max_label": int(chosen_labels.max()) if len(chosen) else None}
    # The sidecar goes first: a shard under its final name always has one.
    sidecar = os.path.join(task.output_dir, STATE_DIR, task.name + ".json")
    atomic.write_json(sidecar, result)
  return result
