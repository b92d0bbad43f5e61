"""Small TFRecord datasets for the input-pipeline and training tests.

`write_dataset` writes shards in tfface's schema from given images, so tests
control every byte (corrupt records, bad labels, exact layouts);
`synthetic_dataset` runs the real generate + transcode path on a few
identities of the embedded synthetic faces.
"""
import os

import cv2
import numpy as np
import tensorflow as tf

from tfface.data.tfrecord import digest
from tfface.data.tfrecord import framing
from tfface.data.tfrecord import schema


def jpeg(rgb, quality=95):
  """JPEG bytes of an RGB uint8 image, encoded from BGR as InsightFace did."""
  ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_JPEG_QUALITY, quality])
  assert ok
  return buf.tobytes()


def face_like(label, index, size=112):
  """A smooth image that depends on (label, index): cheap and JPEG-friendly."""
  rng = np.random.default_rng([label, index])
  base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
  return cv2.resize(base, (size, size), interpolation=cv2.INTER_LINEAR)


def example_bytes(image: bytes, label: int, key: int) -> bytes:
  """tfface's Example of one image, built by the library (`tf.train.Example`).

  Deterministic serialization writes the map entries in key order, as
  `tfface.data.tfrecord.example_batch` does: the bytes must be equal.
  """
  feature = {
      schema.FEATURE_IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
      schema.FEATURE_LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
      schema.FEATURE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[key])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
      deterministic=True)


def write_records(path, records):
  """Writes serialized records with the library's writer (`tf.io.TFRecordWriter`)."""
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)


def write_dataset(directory, images, labels, num_shards=2, num_classes=None,
                  keys=None, image_size=(112, 112)):
  """Writes `images` (encoded bytes) with `labels` as round-robin shards + manifest.

  Returns:
    The `schema.Manifest` written.
  """
  os.makedirs(directory, exist_ok=True)
  keys = list(range(1, len(images) + 1)) if keys is None else list(keys)
  records = [example_bytes(image, int(label), int(key))
             for image, label, key in zip(images, labels, keys)]
  shards = []
  for i in range(num_shards):
    path = os.path.join(directory, schema.shard_name(i, num_shards))
    write_records(path, records[i::num_shards])
    found = framing.scan(path, digest.DEFAULT)
    shards.append(schema.ShardInfo(os.path.basename(path), found.num_records, found.digest,
                                   found.num_bytes))
  manifest = schema.Manifest(
      num_images=len(images),
      num_classes=int(num_classes if num_classes is not None else max(labels) + 1),
      image_size=list(image_size), seed=0, shards=shards)
  schema.save_manifest(directory, manifest)
  return manifest


def labelled_dataset(directory, num_classes=6, per_class=4, num_shards=2):
  """`num_classes` x `per_class` smooth images; returns (manifest, rgb images, labels)."""
  rgb, labels = [], []
  for label in range(num_classes):
    for index in range(per_class):
      rgb.append(face_like(label, index))
      labels.append(label)
  manifest = write_dataset(directory, [jpeg(x) for x in rgb], labels, num_shards)
  return manifest, rgb, labels


def synthetic_dataset(root, num_identities=12, images_per_identity=6, num_pairs=40,
                      num_shards=4, seed=0):
  """generate + transcode into `root/rec` and `root/tfrecords`; returns the two paths."""
  from tfface.data.synthetic import dataset as synthetic  # pylint: disable=g-import-not-at-top
  from tfface.data.transcode import transcode  # pylint: disable=g-import-not-at-top
  rec, tfr = os.path.join(root, "rec"), os.path.join(root, "tfrecords")
  synthetic.generate(rec, num_identities=num_identities,
                     images_per_identity=images_per_identity, num_pairs=num_pairs,
                     seed=seed, num_val_identities=4, val_images_per_identity=3)
  transcode.transcode(rec, tfr, num_shards=num_shards, num_workers=1, seed=seed)
  return rec, tfr
