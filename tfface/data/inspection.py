"""Human-readable summaries of what a dataset path holds (`inspect_data`).

Recognizes a `.rec` directory (or a `.rec` file), a TFRecord directory written
by `rec2tfrecord` (or a single `.tfrecord` file), and a verification `.bin`.
`verify` checks a TFRecord directory's shards against its manifest.

Only the sample records of a TFRecord are decoded with TensorFlow
(`tf.train.Example`), imported when one is read (`reads_tfrecords` tells a
tool beforehand); everything else here runs without it.
"""
import os

import cv2
import numpy as np

from tfface.data.insightface import rec as insightface_rec
from tfface.data.insightface import verification_bin
from tfface.data.tfrecord import digest
from tfface.data.tfrecord import framing
from tfface.data.tfrecord import integrity
from tfface.data.tfrecord import schema

_SAMPLES = 3


def _image_shape(data: bytes) -> str:
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if image is None:
    return "undecodable"
  return "x".join(str(d) for d in image.shape)


def _kind(path: str) -> str | None:
  """Which kind of dataset path `path` is, or None."""
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, schema.MANIFEST_NAME)):
      return "tfrecord_dir"
    if os.path.exists(os.path.join(path, "train.rec")):
      return "rec_dir"
    return "tfrecord_files" if framing.tfrecord_files(path) else None
  for suffix, kind in ((".rec", "rec_file"), (".bin", "bin"), (".tfrecord", "tfrecord_file")):
    if path.endswith(suffix):
      return kind
  return None


def reads_tfrecords(path: str) -> bool:
  """Whether `describe(path)` decodes TFRecord samples (and so imports TensorFlow)."""
  return _kind(path) in ("tfrecord_dir", "tfrecord_files", "tfrecord_file")


def describe(path: str) -> str:
  """Returns a multi-line description of the dataset at `path`.

  Raises:
    FileNotFoundError: nothing exists at `path`.
    ValueError: `path` is none of the known kinds, or bad input.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file or directory")
  kind = _kind(path)
  if kind == "tfrecord_dir":
    return describe_tfrecord_dir(path)
  if kind == "rec_dir":
    return describe_rec(path)
  if kind == "tfrecord_files":
    return "\n".join(describe_tfrecord_file(p) for p in framing.tfrecord_files(path))
  if kind == "rec_file":
    idx = path[:-4] + ".idx"
    return describe_rec((path, idx if os.path.exists(idx) else None))
  if kind == "bin":
    return describe_bin(path)
  if kind == "tfrecord_file":
    return describe_tfrecord_file(path)
  raise ValueError(f"{path}: not a .rec directory, a TFRecord directory (manifest.json), "
                   "a .tfrecord file or a verification .bin")


def describe_rec(source) -> str:
  """The summary of a `.rec` dataset: counts, layout, notes, samples.

  Cheap: it reads the `.idx`, a few records and no more. Opening checks the
  `.idx` offsets (inside the `.rec`, multiples of 4, distinct) and here
  every image key is looked up; an `.idx` offset that is a multiple of 4
  but not where a record starts is only found by reading every record
  (`rec2img`, `rec2tfrecord`).

  Raises:
    ValueError: those checks fail (the `.idx` line or key), or a sample
      record is broken.
  """
  with insightface_rec.InsightFaceRec(source) as rec:
    rec.image_offsets()  # every image key the header announces is in the .idx
    lines = [rec.describe()]
    if rec.property:
      p = rec.property
      lines.append(f"  property: {p.num_classes} classes, {p.height}x{p.width}")
    if rec.has_header:
      lines.append(f"  image keys 1..{rec.num_images}, identity records "
                   f"{rec.identity_keys[0] if len(rec.identity_keys) else '-'}.."
                   f"{rec.identity_keys[-1] if len(rec.identity_keys) else '-'}")
    for note in rec.notes:
      lines.append(f"  note: {note}")
    for key in rec.image_keys[:_SAMPLES].tolist():
      label, image = rec.read(key)
      lines.append(f"  sample key {key}: label {label}, {len(image)} bytes, "
                   f"image {_image_shape(image)}")
  return "\n".join(lines)


def describe_tfrecord_dir(directory: str) -> str:
  """The summary of a `rec2tfrecord` output directory."""
  manifest = schema.load_manifest(directory)
  sizes = [os.path.getsize(p) for p in manifest.shard_paths(directory) if os.path.exists(p)]
  missing = len(manifest.shards) - len(sizes)
  counts = [s.num_records for s in manifest.shards]
  lines = [
      f"{directory}: {manifest.num_images} images, {manifest.num_classes} classes, "
      f"{len(manifest.shards)} shards ({sum(sizes) / 1e6:.1f} MB, "
      f"{min(counts)}-{max(counts)} records each), image size {manifest.image_size}, "
      f"seed {manifest.seed}",
      f"  manifest format {manifest.format_version}, {manifest.digest_algorithm} digest "
      "per shard (inspect_data --verify checks them)",
      f"  source: {manifest.source.get('rec_dir')} ({manifest.source.get('layout')}, "
      f"{manifest.source.get('rec_size')} bytes)",
  ]
  if missing:
    lines.append(f"  WARNING: {missing} shard files listed in the manifest are missing")
  lines += _tfrecord_samples(manifest.shard_paths(directory)[0])
  return "\n".join(lines)


def describe_tfrecord_file(path: str) -> str:
  """Record count and samples of one `.tfrecord` file."""
  found = framing.scan(path, digest.DEFAULT)
  return "\n".join([f"{path}: {found.num_records} records, {found.num_bytes} bytes, "
                    f"{digest.DEFAULT} {found.digest}"] + _tfrecord_samples(path))


def _tfrecord_samples(path: str) -> list[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only to decode Examples)
  lines = []
  for i, (_, record) in enumerate(framing.iter_records(path)):
    if i == _SAMPLES:
      break
    feature = tf.train.Example.FromString(record).features.feature
    label, key, image = (_value(feature[schema.FEATURE_LABEL].int64_list.value),
                         _value(feature[schema.FEATURE_KEY].int64_list.value),
                         _value(feature[schema.FEATURE_IMAGE].bytes_list.value) or b"")
    lines.append(f"  sample {os.path.basename(path)}[{i}]: label {label}, source key {key}, "
                 f"{len(image)} bytes, image {_image_shape(image)}")
  return lines


def _value(values):
  """The one value of a feature list as is; several (or none) as a list."""
  return values[0] if len(values) == 1 else list(values)


def verify(directory: str, progress: bool = True) -> tuple[str, bool]:
  """Checks every shard of a TFRecord directory against its manifest.

  Args:
    directory: a `rec2tfrecord` output directory.
    progress: show bytes read, rate and ETA on stderr.

  Returns:
    `(report, ok)`: one line per bad shard (path and problem) and a summary
    line; `ok` is False when any shard is bad.

  Raises:
    FileNotFoundError, ValueError: nothing at `directory`, or no readable manifest.
  """
  if not os.path.exists(directory):
    raise FileNotFoundError(f"{directory}: no such file or directory")
  manifest = schema.load_manifest(directory)
  problems = integrity.verify_shards(directory, manifest, progress=progress)
  total = sum(s.num_records for s in manifest.shards)
  lines = [f"BAD {path}: {problem}" for path, problem in problems]
  if problems:
    lines.append(f"{directory}: {len(problems)} of {len(manifest.shards)} shards do not "
                 f"match {schema.MANIFEST_NAME}")
  else:
    lines.append(f"{directory}: all {len(manifest.shards)} shards ({total} records) match "
                 f"the {manifest.digest_algorithm} digests, sizes and record counts of "
                 f"{schema.MANIFEST_NAME}")
  return "\n".join(lines), not problems


def describe_bin(path: str) -> str:
  """Pairs, folds and sample images of a verification `.bin`."""
  vbin = verification_bin.load_bin(path)
  same = int(vbin.issame.sum())
  lines = [f"{path}: {vbin.num_pairs} pairs ({same} same, {vbin.num_pairs - same} "
           f"different), {len(vbin.images)} images, {os.path.getsize(path) / 1e6:.1f} MB"]
  if vbin.num_pairs % 10 == 0:
    folds = vbin.issame.reshape(10, -1).sum(axis=1)
    lines.append(f"  same pairs per fold (10 folds): {folds.tolist()}")
  for i in range(min(_SAMPLES, vbin.num_pairs)):
    lines.append(f"  pair {i}: issame={bool(vbin.issame[i])}, images "
                 f"{_image_shape(vbin.images[2 * i])} / {_image_shape(vbin.images[2 * i + 1])}")
  return "\n".join(lines)
