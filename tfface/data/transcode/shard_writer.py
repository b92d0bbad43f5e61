"""One transcode worker's job: turn `.rec` records into a group of TFRecord shards.

Runs in worker processes (see `transcode`), so it only needs the `.rec` path
and the records' keys and byte offsets; it never imports TensorFlow. A
group's records are read together, in file order (`rec_batch`: a
sequential pass when they are dense), checked with numpy, and each shard is
then framed in one buffer (`example_batch`), written under a temporary name,
read back, and renamed.
"""
import dataclasses
import os

import numpy as np

from tfface import atomic
from tfface.data.tfrecord import example_batch
from tfface.data.insightface import rec as insightface_rec
from tfface.data.transcode import rec_batch
from tfface.data.insightface import recordio
from tfface.data.tfrecord import schema
from tfface.data.tfrecord import framing

# Leading bytes of the image formats tf.io.decode_image reads.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
STATE_DIR = ".rec2tfrecord"  # per-shard sidecars and the plan of a transcode

_counter = None  # shared progress counter of a worker process


def init_worker(counter):
  """Pool initializer: keeps the shared progress counter."""
  global _counter
  _counter = counter


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
  # its size); plans the reads. None: the next offset among the task's own.
  ends: np.ndarray | None = None

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
  images = rec_batch.read_images(task.rec_path, offsets, _record_ends(tasks, order, offsets))
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


def _frame(chosen: np.ndarray, images: rec_batch.Images, labels: np.ndarray,
           keys: np.ndarray, slow: dict, scratch: bytearray) -> memoryview:
  """The TFRecord bytes of the file-ordered records `chosen`, in that order."""
  staged = images.length[chosen]  # 0 for the images read the exact way
  lengths = staged.copy()
  slow_rows = [(j, slow[i]) for j, i in enumerate(chosen.tolist()) if i in slow]
  for j, image in slow_rows:
    lengths[j] = len(image)
  framed = example_batch.layout(lengths, labels[chosen], keys[chosen], scratch)
  out, staging = memoryview(framed.buffer), memoryview(images.staging)
  for dst, src, n in zip(framed.image_at.tolist(), images.at[chosen].tolist(),
                         staged.tolist()):
    out[dst:dst + n] = staging[src:src + n]
  for j, image in slow_rows:
    out[framed.image_at[j]:framed.image_at[j] + len(image)] = image
  example_batch.seal(framed)
  return memoryview(framed.buffer)


def write_shards(tasks: list[ShardTask], report=None) -> list[dict]:
  """Reads the records of a group of shards once, then writes each shard.

  Each shard is written to a temporary name, read back and checked, given a
  sidecar, and renamed; shards finished before an error stay complete.

  Args:
    tasks: `ShardTask`s of the same `.rec` (a group sized to fit in memory).
    report: callable `(num_records)` for progress; defaults to the counter
      shared with the parent process.

  Returns:
    Each shard's sidecar: file, num_records, sha256, min/max label, bytes.

  Raises:
    ValueError: a record that is corrupt, not an image, or labelled outside
      `[0, num_classes)`; the message names the file, key and byte offset.
  """
  report = report or (_report_shared if _counter is not None else None)
  order, images, labels, is_image, slow, keys = _read_group(tasks)
  # where[g]: file-ordered index of record g of the concatenated tasks.
  where = np.empty_like(order)
  where[order] = np.arange(len(order))
  scratch = bytearray()  # reused by the shards: fresh memory costs page faults
  results, first = [], 0
  for task in tasks:
    chosen = where[first:first + len(task.keys)]  # write order
    first += len(task.keys)
    chosen = chosen[is_image[chosen]]
    bound = example_batch.size_bound(images.length[chosen]) + sum(map(len, slow.values()))
    if len(scratch) < bound:
      scratch = bytearray(bound)
    with _frame(chosen, images, labels, keys, slow, scratch) as data:
      results.append(_write(task, data, len(chosen), labels[chosen]))
    if report:
      report(len(chosen))
  return results


def write_shard(task: ShardTask, report=None) -> dict:
  """`write_shards` for a single shard."""
  return write_shards([task], report)[0]


def _write(task: ShardTask, data, num_records: int, labels: np.ndarray) -> dict:
  """Writes, verifies, records and renames one shard; returns its sidecar."""
  path = os.path.join(task.output_dir, task.name)
  writer = framing.TFRecordWriter(path)
  try:
    writer.write_framed(data, num_records)
    # Read the file back before it gets its final name: what is on disk must be
    # exactly what was written.
    writer.verify()
    result = {"file": task.name, "num_records": writer.num_records, "sha256": writer.sha256,
              "num_bytes": writer.num_bytes,
              "min_label": int(labels.min()) if len(labels) else None,
              "max_label": int(labels.max()) if len(labels) else None}
    # The sidecar goes first: a shard under its final name always has one.
    sidecar = os.path.join(task.output_dir, STATE_DIR, task.name + ".json")
    atomic.write_json(sidecar, result)
    writer.close()
  except BaseException:
    writer.abort()
    raise
  return result
