"""Damaged TFRecord shards are found and named: sizes, digests, the corrupt record's offset.

TensorFlow's own reader is the oracle of where a corrupt record is: its
DataLossError says `corrupted record at N`, where N is the record's start for
a bad length and the start of its data (12 bytes later) for bad data.
"""
import hashlib
import json
import os
import re
import shutil

import pytest
import tensorflow as tf

from tfface.data.synthetic import dataset as synthetic
from tfface.data.tfrecord import digest
from tfface.data.tfrecord import framing
from tfface.data.tfrecord import integrity
from tfface.data.tfrecord import schema
from tfface.data.transcode import transcode


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("integrity")
  synthetic.generate(str(root / "rec"), num_identities=6, images_per_identity=10,
                     num_pairs=20, num_val_identities=2, val_images_per_identity=2)
  transcode.transcode(str(root / "rec"), str(root / "tfr"), num_shards=3, num_workers=1)
  return root / "tfr"


@pytest.fixture
def data_dir(clean_dir, tmp_path):
  shutil.copytree(clean_dir, tmp_path / "tfr")
  return tmp_path / "tfr"


def _overwrite(path, offset, data):
  with open(path, "r+b") as f:
    f.seek(offset)
    f.write(data)


def _tensorflow_corrupt_offset(path) -> int:
  with pytest.raises(tf.errors.DataLossError) as error:
    for _ in tf.data.TFRecordDataset(str(path)):
      pass
  return int(re.search(r"corrupted record at (\d+)", str(error.value)).group(1))


def _record_starts(path) -> list[int]:
  """Byte offsets of the records, from the length fields (a plain reference walk)."""
  data, starts, at = path.read_bytes(), [], 0
  while at < len(data):
    starts.append(at)
    at += 16 + int.from_bytes(data[at:at + 8], "little")
  return starts


def test_200_overwritten_bytes_are_named_by_shard_and_record(data_dir):
  manifest = schema.load_manifest(str(data_dir))
  path = data_dir / manifest.shards[1].file
  middle = os.path.getsize(path) // 2
  hit = max(s for s in _record_starts(path) if s <= middle)
  assert integrity.find_corrupt_record(str(path)) is None  # negative control
  _overwrite(path, middle, bytes(200))
  integrity.check_shard_sizes(str(data_dir), manifest)  # same size: passes
  offset, reason = integrity.find_corrupt_record(str(path))
  assert offset == hit == _tensorflow_corrupt_offset(path) - 12
  assert reason.startswith("data CRC mismatch")
  problems = integrity.verify_shards(str(data_dir), manifest)
  assert [p for p, _ in problems] == [str(path)]  # only the damaged shard
  assert f"corrupt record at byte offset {hit}" in problems[0][1]
  assert manifest.shards[1].digest in problems[0][1]


def test_a_broken_length_field_is_found_where_tensorflow_finds_it(data_dir):
  manifest = schema.load_manifest(str(data_dir))
  path = data_dir / manifest.shards[0].file
  third = _record_starts(path)[2]
  _overwrite(path, third + 1, b"\x07")  # the length grows by 1792 bytes
  offset, reason = integrity.find_corrupt_record(str(path))
  assert (offset, reason.split(" (")[0]) == (_tensorflow_corrupt_offset(path),
                                            "length CRC mismatch")


def test_truncated_shard_fails_the_size_check(data_dir):
  manifest = schema.load_manifest(str(data_dir))
  path = data_dir / manifest.shards[2].file
  size = os.path.getsize(path)
  last = _record_starts(path)[-1]
  os.truncate(path, size - 100)
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: {size - 100} bytes on disk, manifest.json records {size}")):
    integrity.check_shard_sizes(str(data_dir), manifest)
  offset, reason = integrity.find_corrupt_record(str(path))
  assert offset == last and reason.startswith("truncated")
  [(bad, problem)] = integrity.verify_shards(str(data_dir), manifest)
  assert bad == str(path) and "truncated" in problem
  os.remove(path)
  with pytest.raises(ValueError, match=f"{path}: missing"):
    integrity.check_shard_sizes(str(data_dir), manifest)
  assert integrity.verify_shards(str(data_dir), manifest)[0][1].startswith("missing")


def _as_format_1(data_dir):
  """Rewrites the manifest as tfface 0.1 wrote it: sha256 per shard, no sizes."""
  path = data_dir / schema.MANIFEST_NAME
  data = json.loads(path.read_text())
  data["format_version"] = 1
  del data["digest_algorithm"]
  data["shards"] = [{"file": s["file"], "num_records": s["num_records"],
                     "sha256": hashlib.sha256((data_dir / s["file"]).read_bytes()).hexdigest()}
                    for s in data["shards"]]
  path.write_text(json.dumps(data))


def test_format_1_manifests_are_read_and_verified(data_dir):
  _as_format_1(data_dir)
  manifest = schema.load_manifest(str(data_dir))
  assert (manifest.format_version, manifest.digest_algorithm) == (1, digest.SHA256)
  assert manifest.shards[0].num_bytes is None
  assert integrity.verify_shards(str(data_dir), manifest) == []
  path = data_dir / manifest.shards[0].file
  _overwrite(path, os.path.getsize(path) - 50, b"x")
  integrity.check_shard_sizes(str(data_dir), manifest)  # no sizes to compare
  assert [p for p, _ in integrity.verify_shards(str(data_dir), manifest)] == [str(path)]
  os.truncate(path, 10)
  with pytest.raises(ValueError, match="too few for the"):
    integrity.check_shard_sizes(str(data_dir), manifest)


def test_scan_counts_what_tensorflow_reads(clean_dir):
  manifest = schema.load_manifest(str(clean_dir))
  for shard, path in zip(manifest.shards, manifest.shard_paths(str(clean_dir))):
    found = framing.scan(path, manifest.digest_algorithm)
    assert found.num_records == sum(1 for _ in tf.data.TFRecordDataset(path))
    assert (found.num_records, found.num_bytes, found.digest) == (
        shard.num_records, shard.num_bytes, shard.digest)
