"""One transcode worker's job: turn a list of `.rec` records into one TFRecord shard.

Runs in worker processes (see `transcode`), so it only needs the `.rec` path
and the records' keys and byte offsets; it never imports TensorFlow.
"""
import dataclasses
import json
import os

import numpy as np

from tfface.data import example_batch
from tfface.data import insightface
from tfface.data import rec_batch
from tfface.data import recordio
from tfface.data import schema
from tfface.data import tfrecord_io

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
  label = int(header.label) if header.flag == 0 else insightface.class_of(header.label)
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


def _read_records(task: ShardTask, offsets: np.ndarray, keys: np.ndarray):
  """Images and labels of the records at `offsets` (ascending), checked.

  The vectorized `rec_batch` path covers plain records with a valid image
  and label; the rest (split records, identity records, anything suspect)
  go through `_read_one` in file order, so the first bad record raises the
  same error as a record-at-a-time reader would.

  Returns:
    `(heads, labels, is_image, slow)`: `rec_batch.Heads`, int64 labels, which
    records are images, and `{index: image bytes}` of images read slowly.
  """
  heads = rec_batch.read_heads(task.rec_path, offsets)
  # float -> int64 truncates toward zero like int(); huge or non-finite labels
  # stay on the exact path (int() raises there, as it always did).
  finite = np.abs(heads.label) < 2.0**62
  labels = np.where(finite, heads.label, 0).astype(np.int64)
  in_range = finite & (labels >= 0)
  if task.num_classes is not None:
    in_range &= labels < task.num_classes
  fast = heads.ok & _has_signature(heads.signature) & in_range
  is_image = np.ones(len(offsets), dtype=bool)
  slow = {}
  suspects = np.flatnonzero(~fast).tolist()
  if suspects:
    with recordio.RecordIOReader(task.rec_path) as reader:
      for i in suspects:
        read = _read_one(task, reader, int(keys[i]), int(offsets[i]))
        if read is None:
          is_image[i] = False
        else:
          labels[i], slow[i] = read
  return heads, labels, is_image, slow


def _build(task: ShardTask, report) -> tuple[bytearray, int, np.ndarray]:
  """The framed TFRecord bytes of the shard: `(buffer, num_records, labels)`."""
  order = np.argsort(task.offsets, kind="stable")  # file order: sequential reads
  offsets, keys = task.offsets[order], task.keys[order]
  heads, labels, is_image, slow = _read_records(task, offsets, keys)
  # Records to write, as indices into the file-ordered arrays, in write order.
  chosen = np.argsort(order, kind="stable")
  chosen = chosen[is_image[chosen]]
  lengths = heads.image_length.copy()
  for i, image in slow.items():
    lengths[i] = len(image)
  framed = example_batch.layout(lengths[chosen], labels[chosen], keys[chosen])
  image_at = np.zeros(len(order), dtype=np.int64)
  image_at[chosen] = framed.image_at
  fast = is_image.copy()
  fast[list(slow)] = False
  rec_batch.copy_images(task.rec_path, heads.image_start[fast], heads.image_length[fast],
                        framed.buffer, image_at[fast])
  out = memoryview(framed.buffer)
  for i, image in slow.items():
    out[image_at[i]:image_at[i] + len(image)] = image
  example_batch.seal(framed)
  if report:
    report(len(chosen))
  return framed.buffer, len(chosen), labels[chosen]


def write_shard(task: ShardTask, report=None) -> dict:
  """Reads the task's records and writes its shard (temporary name, then rename).

  Args:
    task: the `ShardTask`.
    report: callable `(num_records)` for progress; defaults to the counter
      shared with the parent process.

  Returns:
    The shard's sidecar: file, num_records, sha256, min/max label, bytes.

  Raises:
    ValueError: a record that is corrupt, not an image, or labelled outside
      `[0, num_classes)`; the message names the file, key and byte offset.
  """
  report = report or (_report_shared if _counter is not None else None)
  data, num_records, labels = _build(task, report)
  path = os.path.join(task.output_dir, task.name)
  writer = tfrecord_io.TFRecordWriter(path)
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
    tmp = f"{sidecar}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
      json.dump(result, f, sort_keys=True)
    os.replace(tmp, sidecar)
    writer.close()
  except BaseException:
    writer.abort()
    raise
  return result
