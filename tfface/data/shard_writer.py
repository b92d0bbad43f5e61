"""One transcode worker's job: turn a list of `.rec` records into one TFRecord shard.

Runs in worker processes (see `transcode`), so it only needs the `.rec` path
and the records' keys and byte offsets; it never imports TensorFlow.
"""
import dataclasses
import json
import os

import numpy as np

from tfface.data import insightface
from tfface.data import recordio
from tfface.data import schema
from tfface.data import tfrecord_io

# Leading bytes of the image formats tf.io.decode_image reads.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_REPORT_EVERY = 1024  # records between progress updates
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
  order = np.argsort(task.offsets, kind="stable")  # read sequentially
  examples: list[bytes | None] = [None] * len(order)
  labels = []
  pending = 0
  with recordio.RecordIOReader(task.rec_path, buffer_size=4 << 20) as reader:
    for position in order.tolist():
      key, offset = int(task.keys[position]), int(task.offsets[position])
      where = f"{task.rec_path}: key {key} at byte offset {offset}"
      header, image = recordio.unpack_header(reader.read_at(offset), where)
      if not _check_image(task, key, offset, header.label, image):
        continue
      label = (int(header.label) if header.flag == 0
               else insightface.class_of(header.label))
      if label < 0 or (task.num_classes is not None and label >= task.num_classes):
        raise ValueError(f"{where}: label {label} is outside [0, {task.num_classes}) "
                         f"({task.num_classes_source})")
      labels.append(label)
      examples[position] = tfrecord_io.encode_example(image, label, key)
      pending += 1
      if report and pending >= _REPORT_EVERY:
        report(pending)
        pending = 0
  if report and pending:
    report(pending)
  path = os.path.join(task.output_dir, task.name)
  writer = tfrecord_io.TFRecordWriter(path)
  try:
    for example in examples:
      if example is not None:
        writer.write(example)
    # Read the file back before it gets its final name: what is on disk must be
    # exactly what was written.
    writer.verify()
    result = {"file": task.name, "num_records": writer.num_records, "sha256": writer.sha256,
              "num_bytes": writer.num_bytes,
              "min_label": min(labels) if labels else None,
              "max_label": max(labels) if labels else None}
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
