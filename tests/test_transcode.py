"""rec -> sharded TFRecords: CRC, Example bytes, tf.data, shuffling, resume, bad input."""
import faulthandler
import hashlib
import json
import os
import shutil
import struct

import blake3
import google_crc32c
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_crc

from conftest import REPO
import training_data
from tfface.data.insightface import rec as insightface_rec
from tfface.data.insightface import recordio
from tfface.data.synthetic import dataset as synthetic
from tfface.data.tfrecord import digest
from tfface.data.tfrecord import example_batch
from tfface.data.tfrecord import framing
from tfface.data.tfrecord import schema
from tfface.data.transcode import rec_batch
from tfface.data.transcode import shard_writer
from tfface.data.transcode import transcode

SPEC = {
    schema.FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
    schema.FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64),
    schema.FEATURE_KEY: tf.io.FixedLenFeature([], tf.int64),
}


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("synth")
  synthetic.generate(str(path), num_identities=8, images_per_identity=6, num_pairs=20,
                     num_val_identities=3, val_images_per_identity=2)
  return path


def _copy(rec_dir, tmp_path):
  target = tmp_path / "rec"
  shutil.copytree(rec_dir, target)
  return target


def _read_with_tf(directory):
  manifest = schema.load_manifest(str(directory))
  dataset = tf.data.TFRecordDataset(manifest.shard_paths(str(directory)))
  out = []
  for batch in dataset.batch(64).map(lambda x: tf.io.parse_example(x, SPEC)):
    out += zip(batch[schema.FEATURE_KEY].numpy().tolist(),
               batch[schema.FEATURE_LABEL].numpy().tolist(),
               batch[schema.FEATURE_IMAGE].numpy().tolist())
  return manifest, out


def test_masked_crc32c_matches_tensorboards():
  rng = np.random.default_rng(0)
  messages = [b"", b"123456789"] + [rng.bytes(int(n)) for n in rng.integers(1, 3000, 20)]
  assert [framing.masked_crc32c(m) for m in messages] == [
      tb_crc.masked_crc32c(m) for m in messages]


_NATIVE = [False, pytest.param(True, marks=pytest.mark.skipif(
    not example_batch.NATIVE, reason="the C framer is not built or the CPU lacks CRC-32C"))]


@pytest.mark.parametrize("width", [0, 1, 8, 13])
def test_crc32c_of_rows_matches_google_crc32c(width):
  rows = np.random.default_rng(width).integers(0, 256, (300, width), dtype=np.uint8)
  expected = [google_crc32c.value(row.tobytes()) for row in rows]
  assert example_batch.crc32c_rows(rows).tolist() == expected


@pytest.mark.parametrize("size", [0, 3, 36, 37, 100])
def test_head_gather_matches_a_byte_at_a_time_reading(size):
  """rec_batch's row gather, with rows before, across and past the ends of the data."""
  rng = np.random.default_rng(size)
  data = rng.integers(0, 256, size, dtype=np.uint8)
  at = np.r_[rng.integers(-40, size + 40, 60), 0, max(size - 36, 0)].astype(np.int64)
  expected = np.zeros((len(at), 36), np.uint8)
  for i, start in enumerate(at.tolist()):
    for k in range(36):
      if 0 <= start + k < size:
        expected[i, k] = data[start + k]
  assert (rec_batch._gather(data, at, 36) == expected).all()


def _framed_by_example_batch(images, labels, keys, native=None) -> bytes:
  """The records framed by `layout`, then `seal` (native None) or `fill`."""
  lengths = np.array([len(i) for i in images])
  framed = example_batch.layout(lengths, labels, keys)
  if native is None:
    view = memoryview(framed.buffer)
    for at, image in zip(framed.image_at.tolist(), images):
      view[at:at + len(image)] = image
    example_batch.seal(framed)
  else:
    # The images from one buffer, in another order than they are written;
    # filled in two calls that split the records unevenly.
    source = np.frombuffer(b"".join(images[::-1]), np.uint8)
    source_at = (len(source) - np.cumsum(lengths)).astype(np.int64)
    half = len(images) // 2 + 1
    example_batch.fill(framed, source, source_at, lengths, 0, half, native=native)
    example_batch.fill(framed, source, source_at, lengths, half, native=native)
  return bytes(framed.buffer)


@pytest.mark.parametrize("native", [None] + _NATIVE)
def test_batch_framing_is_byte_for_byte_the_librarys(tmp_path, native):
  """example_batch against the library path: tf.train.Example + tf.io.TFRecordWriter.

  With `seal` after the images are copied in, and with `fill` in Python and
  in C (tfface/data/tfrecord/_framer.c).
  """
  rng = np.random.default_rng(1)
  # Every varint width boundary of image sizes (1, 2, 3 bytes), labels and
  # keys (up to 10 bytes for negative int64s); the label and key of one
  # record differ in width.
  lengths = rng.choice([0, 1, 127, 128, 16383, 16384, 70000], 200)
  images = [rng.bytes(int(n)) for n in lengths]
  labels = rng.choice([0, 1, 127, 128, 2**40, -1, 2**63 - 1], 200)
  keys = rng.choice([0, 127, 128, 300000, 2**35, -5], 200)
  training_data.write_records(tmp_path / "lib.tfrecord", [
      training_data.example_bytes(i, int(l), int(k)) for i, l, k in zip(images, labels, keys)])
  ours = _framed_by_example_batch(images, labels, keys, native)
  assert ours == (tmp_path / "lib.tfrecord").read_bytes()
  # A negative control: one label changed changes the bytes.
  assert _framed_by_example_batch(images, np.r_[labels[:-1], labels[-1] + 1], keys,
                                  native) != ours


def test_the_c_framer_is_built_where_there_is_a_c_compiler():
  """setup.py builds it optionally: a missing one would quietly cost the speed."""
  if not (shutil.which("cc") or shutil.which("gcc")):
    pytest.skip("no C compiler: the Python framer is used")
  assert example_batch._framer is not None, "run `pip install -e .` (or `make venv`)"


@pytest.mark.skipif(not example_batch.NATIVE, reason="the C framer is not in use")
def test_the_c_framer_refuses_what_does_not_fit_and_writes_nothing():
  lengths = np.array([5, 0, 7])
  framed = example_batch.layout(lengths, np.array([1, 2, 3]), np.array([4, 5, 6]))
  before = bytes(framed.buffer)
  source = np.arange(12, dtype=np.uint8)
  for source_at, image_at, match in [
      (np.array([0, 0, 6]), framed.image_at, None),  # 7 bytes at 6: one past the end
      (np.array([0, 0, -1]), framed.image_at, None),
      (np.array([0, 0, 5]), framed.image_at + len(before), None)]:
    framed.image_at = image_at
    with pytest.raises(ValueError, match=r"record \d+: image \[-?\d+, \+\d+\) from source "
                       r"byte -?\d+, Example \[\d+, \d+\) do not fit buffers of \d+ and 12 "
                       r"bytes"):
      example_batch.fill(framed, source, source_at, lengths, native=True)
    assert bytes(framed.buffer) == before  # checked before anything is written
  framed.image_at = framed.image_at - len(before)
  with pytest.raises(ValueError, match=r"records \[2, 4\) are not within \[0, 3\)"):
    example_batch.fill(framed, source, np.array([0, 0, 5]), lengths, 2, 4, native=True)
  with pytest.raises(TypeError, match="source_at: expected int64 values"):
    example_batch.fill(framed, source, np.array([0, 0, 5], np.int32), lengths, native=True)
  with pytest.raises(ValueError, match="lengths holds 2 values, image_at 3"):
    example_batch.fill(framed, source, np.array([0, 0, 5]), lengths[:2], native=True)
  example_batch.fill(framed, source, np.array([0, 0, 5]), lengths, native=True)
  assert bytes(framed.buffer) != before  # the same arguments, in range, fill it


def test_transcode_writes_the_same_bytes_with_either_framer(rec_dir, tmp_path, monkeypatch):
  shipped = transcode.transcode(str(rec_dir), str(tmp_path / "a"), num_shards=3,
                                num_workers=1)
  monkeypatch.setattr(example_batch, "NATIVE", False)
  python = transcode.transcode(str(rec_dir), str(tmp_path / "b"), num_shards=3, num_workers=1)
  assert python.manifest.shards == shipped.manifest.shards  # the digests of every byte


def test_transcode_is_byte_exact_shuffled_and_verified(rec_dir, tmp_path):
  result = transcode.transcode(str(rec_dir), str(tmp_path / "out"), num_shards=4,
                               num_workers=2, seed=3)
  manifest, records = _read_with_tf(tmp_path / "out")
  assert manifest == result.manifest and manifest.num_images == 48
  assert (manifest.num_classes, manifest.image_size, manifest.seed) == (8, [112, 112], 3)
  assert manifest.source["rec_size"] == os.path.getsize(rec_dir / "train.rec")
  assert [s.file for s in manifest.shards] == [schema.shard_name(i, 4) for i in range(4)]
  assert [s.num_records for s in manifest.shards] == [12, 12, 12, 12]
  with insightface_rec.InsightFaceRec(str(rec_dir)) as rec:
    expected = {key: (label, image) for key, label, image in rec}
  assert {k: (l, i) for k, l, i in records} == expected  # every image, bytes unchanged
  keys = [k for k, _, _ in records]
  assert keys != sorted(keys)  # globally shuffled, not in identity order
  assert len({l for _, l, _ in records[:12]}) >= 5  # one shard mixes many identities
  assert manifest.digest_algorithm == digest.DEFAULT and manifest.format_version == 2
  for shard in manifest.shards:
    path = str(tmp_path / "out" / shard.file)
    found = framing.scan(path, manifest.digest_algorithm)
    assert (found.num_records, found.num_bytes) == (shard.num_records, shard.num_bytes)
    assert found.digest == shard.digest == blake3.blake3(open(path, "rb").read()).hexdigest()
    assert len(list(framing.iter_records(path))) == shard.num_records  # every CRC checked


def test_same_output_for_any_worker_count_and_machine_split(rec_dir, tmp_path):
  one = transcode.transcode(str(rec_dir), str(tmp_path / "a"), num_shards=5, num_workers=1)
  part = transcode.transcode(str(rec_dir), str(tmp_path / "b"), num_shards=5, num_workers=1,
                             worker_index=1, num_workers_total=2)
  assert part.manifest is None and part.shards_written == [1, 3]
  assert not (tmp_path / "b" / schema.MANIFEST_NAME).exists()
  rest = transcode.transcode(str(rec_dir), str(tmp_path / "b"), num_shards=5, num_workers=2,
                             worker_index=0, num_workers_total=2)
  assert rest.shards_written == [0, 2, 4]
  assert rest.manifest.shards == one.manifest.shards  # same bytes, same digests


def test_resume_after_a_crash_matches_an_uninterrupted_run(rec_dir, tmp_path, monkeypatch):
  full = transcode.transcode(str(rec_dir), str(tmp_path / "full"), num_shards=4, num_workers=1)
  out = tmp_path / "crash"
  real_write = shard_writer.write_shard_file
  written = []

  def failing_write(path, chosen, *args):
    written.append(1)
    if len(written) == 3:  # killed halfway through writing the third shard
      real_write(path, chosen[:len(chosen) // 2], *args)
      raise KeyboardInterrupt("killed")
    return real_write(path, chosen, *args)

  monkeypatch.setattr(shard_writer, "write_shard_file", failing_write)
  with pytest.raises(KeyboardInterrupt):
    transcode.transcode(str(rec_dir), str(out), num_shards=4, num_workers=1)
  monkeypatch.undo()
  names = sorted(os.listdir(out))
  assert names == [".rec2tfrecord", schema.shard_name(0, 4), schema.shard_name(1, 4)]
  (out / (schema.shard_name(2, 4) + ".tmp-999")).write_bytes(b"left by a killed worker")
  resumed = transcode.transcode(str(rec_dir), str(out), num_shards=4, num_workers=1)
  assert resumed.shards_kept == [0, 1] and resumed.shards_written == [2, 3]
  assert resumed.manifest == full.manifest
  assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "full"))


@pytest.mark.parametrize("algorithm,reference", [
    ("sha256", hashlib.sha256), ("blake2b-256", lambda d: hashlib.blake2b(d, digest_size=32))])
def test_other_digests_are_recorded_and_named(rec_dir, tmp_path, algorithm, reference):
  result = transcode.transcode(str(rec_dir), str(tmp_path), num_shards=2, num_workers=1,
                               digest_algorithm=algorithm)
  assert schema.load_manifest(str(tmp_path)).digest_algorithm == algorithm
  for shard, path in zip(result.manifest.shards, result.manifest.shard_paths(str(tmp_path))):
    data = open(path, "rb").read()
    assert shard.digest == reference(data).hexdigest()
    assert shard.digest != blake3.blake3(data).hexdigest()
    assert framing.scan(path, algorithm).digest == shard.digest
  with pytest.raises(ValueError, match="different transcode.*digest_algorithm"):
    transcode.transcode(str(rec_dir), str(tmp_path), num_shards=2, num_workers=1)


def test_the_tool_offers_every_digest_and_defaults_to_the_librarys():
  source = (REPO / "tools" / "rec2tfrecord.py").read_text()
  assert (f'flags.DEFINE_enum("digest", "{digest.DEFAULT}", '
          f'{json.dumps(list(digest.ALGORITHMS))},') in source


def test_resume_refuses_a_different_plan(rec_dir, tmp_path):
  transcode.transcode(str(rec_dir), str(tmp_path), num_shards=4, num_workers=1, seed=0)
  with pytest.raises(ValueError, match="different transcode.*seed"):
    transcode.transcode(str(rec_dir), str(tmp_path), num_shards=4, num_workers=1, seed=1)
  again = transcode.transcode(str(rec_dir), str(tmp_path), num_shards=2, num_workers=1,
                              seed=1, resume=False)
  assert len(again.manifest.shards) == 2
  assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".tfrecord")) == [
      schema.shard_name(0, 2), schema.shard_name(1, 2)]


def test_default_shard_count():
  assert transcode.default_num_shards(10 << 20, 1000) == 16
  assert transcode.default_num_shards(28 << 30, 5_000_000) == 224
  assert transcode.default_num_shards(10 << 20, 5) == 5


def _corrupt_and_check(rec, out, match):
  with pytest.raises(ValueError, match=match):
    transcode.transcode(str(rec), str(out), num_shards=4, num_workers=2)
  left = os.listdir(out) if out.exists() else []
  assert schema.MANIFEST_NAME not in left
  assert not [n for n in left if ".tmp-" in n]


def test_truncated_rec(rec_dir, tmp_path):
  rec = _copy(rec_dir, tmp_path)
  with insightface_rec.InsightFaceRec(str(rec)) as view:
    last_image = int(view.image_offsets()[-1])
    last_record = int(view.offset_of(int(view.identity_keys[-1])))
  os.truncate(rec / "train.rec", last_record + 10)  # inside the last record
  _corrupt_and_check(rec, tmp_path / "out",
                     rf"train.rec: truncated record at byte offset {last_record}")
  os.truncate(rec / "train.rec", last_image + 100)  # the .idx now points past the end
  _corrupt_and_check(rec, tmp_path / "out", "past the end .* the .rec is truncated")


def test_a_rec_that_shrinks_during_the_run_is_an_error_naming_it(rec_dir, tmp_path,
                                                                  monkeypatch):
  rec = _copy(rec_dir, tmp_path)
  real_map_images = rec_batch.map_images

  def truncating(data, offsets, ends):  # runs in the worker, with the .rec mapped
    faulthandler.disable()  # pytest's would print the worker's SIGBUS as a crash
    os.truncate(rec / "train.rec", 0)
    return real_map_images(data, offsets, ends)  # SIGBUS past the new end

  monkeypatch.setattr(rec_batch, "map_images", truncating)
  with pytest.raises(ValueError, match=r"rec/train.rec: changed during the transcode "
                     r"\(\d+ bytes at the start, 0 bytes now\)"):
    transcode.transcode(str(rec), str(tmp_path / "out"), num_shards=2, num_workers=1)
  assert not [n for n in os.listdir(tmp_path / "out") if n.endswith(".tfrecord")]


def test_bad_magic(rec_dir, tmp_path):
  rec = _copy(rec_dir, tmp_path)
  with insightface_rec.InsightFaceRec(str(rec)) as view:
    offset = int(view.offset_of(17))
  with open(rec / "train.rec", "r+b") as f:
    f.seek(offset)
    f.write(b"JUNK")
  _corrupt_and_check(rec, tmp_path / "out", rf"bad magic 0x4b4e554a at byte offset {offset}")


def test_idx_of_another_rec(rec_dir, tmp_path):
  rec = _copy(rec_dir, tmp_path)
  keys, offsets = recordio.read_idx(str(rec / "train.idx"))
  recordio.write_idx(str(rec / "train.idx"),
                     [f"{k}\t{o + (4 if k == 9 else 0)}\n" for k, o in zip(keys, offsets)])
  _corrupt_and_check(rec, tmp_path / "out", "not a RecordIO record boundary")


def test_idx_past_the_end(rec_dir, tmp_path):
  rec = _copy(rec_dir, tmp_path)
  with open(rec / "train.idx", "a") as f:
    f.write(f"123456\t{os.path.getsize(rec / 'train.rec') + 8}\n")
  _corrupt_and_check(rec, tmp_path / "out", "key 123456 has byte offset .* past the end")


def _rewrite_record(rec, key, header, payload):
  """Rebuilds the .rec with one record replaced (offsets change: idx rewritten)."""
  with insightface_rec.InsightFaceRec(str(rec)) as view:
    keys = view.index.keys.tolist()
    records = [view.index.read_idx(k) for k in keys]
  records[keys.index(key)] = recordio.pack_header(header, payload)
  with recordio.RecordIOWriter(str(rec / "train.rec"), str(rec / "train.idx")) as writer:
    for k, r in zip(keys, records):
      writer.write(r, k)


def test_payload_that_is_not_an_image(rec_dir, tmp_path):
  rec = _copy(rec_dir, tmp_path)
  _rewrite_record(rec, 20, recordio.IRHeader(0, 3, 20, 0), b"hello, not a jpeg")
  _corrupt_and_check(rec, tmp_path / "out", r"key 20 at byte offset \d+: payload is not an image")


def test_label_outside_property(rec_dir, tmp_path):
  rec = _copy(rec_dir, tmp_path)
  insightface_rec.write_property(str(rec / "property"), 5)
  _corrupt_and_check(rec, tmp_path / "out", r"label [5-7] is outside \[0, 5\) .*property")


def test_identity_records_in_header_less_rec_are_skipped(tmp_path):
  rec = tmp_path / "rec"
  rec.mkdir()
  with recordio.RecordIOWriter(str(rec / "train.rec"), str(rec / "train.idx")) as writer:
    for key in range(6):
      writer.write(recordio.pack_header(recordio.IRHeader(0, key % 2, key, 0), b"\xff\xd8\xff!"),
                   key)
    writer.write(recordio.pack_header(recordio.IRHeader(0, [0, 3], 6, 0)), 6)
  result = transcode.transcode(str(rec), str(tmp_path / "out"), num_shards=2, num_workers=1)
  assert result.manifest.num_images == 6 and result.manifest.num_classes == 2
  assert result.manifest.source["layout"] == "header-less"


def test_worker_error_leaves_no_complete_looking_shard(rec_dir, tmp_path):
  with insightface_rec.InsightFaceRec(str(rec_dir)) as view:
    good = view.offset_of(1)
  task = shard_writer.ShardTask(str(rec_dir / "train.rec"), str(tmp_path), 0, 1,
                                np.array([1, 2]), np.array([good, good + 4]), None, "test")
  with pytest.raises(ValueError, match=f"bad magic .* at byte offset {good + 4}"):
    shard_writer.write_shard(task)
  assert os.listdir(tmp_path) == []


def test_tfrecord_scan_counts_records_and_detects_truncation(tmp_path):
  path = tmp_path / "x.tfrecord"
  training_data.write_records(path, [b"abc", b"defg"])
  found = framing.scan(str(path), digest.SHA256)
  assert (found.num_records, found.num_bytes) == (2, 2 * 16 + 7)
  assert [data for _, data in framing.iter_records(str(path))] == [b"abc", b"defg"]
  path.write_bytes(path.read_bytes()[:-3])
  with pytest.raises(ValueError, match="byte offset 19: truncated"):
    framing.scan(str(path), digest.SHA256)
  assert struct.unpack("<Q", path.read_bytes()[:8]) == (3,)


def test_split_records_are_rejoined(tmp_path, monkeypatch):
  rec = tmp_path / "rec"
  rec.mkdir()
  magic = struct.pack("<I", recordio.MAGIC)
  with recordio.RecordIOWriter(str(rec / "train.rec"), str(rec / "train.idx")) as writer:
    for key in range(40):
      # Some images hold the RecordIO magic at an aligned offset: the writer
      # splits those records, which only the record-at-a-time reader rejoins.
      image = b"\xff\xd8\xff\xe0" + (magic if key % 3 == 0 else b"abcd") + os.urandom(key * 37)
      writer.write(recordio.pack_header(recordio.IRHeader(0, key % 4, key, 0), image), key)
  with insightface_rec.InsightFaceRec(str(rec)) as view:
    expected = {key: (label, image) for key, label, image in view}
  whole = transcode.transcode(str(rec), str(tmp_path / "a"), num_shards=3, num_workers=1)
  _, records = _read_with_tf(tmp_path / "a")
  assert {k: (l, i) for k, l, i in records} == expected
  monkeypatch.setattr(shard_writer, "CHUNK_BYTES", 300)  # a chunk of one record or two
  chunked = transcode.transcode(str(rec), str(tmp_path / "b"), num_shards=3, num_workers=1)
  assert chunked.manifest.shards == whole.manifest.shards


@pytest.mark.parametrize("chunk_bytes", [1, 5000])
def test_shards_written_a_chunk_at_a_time_are_the_same(rec_dir, tmp_path, monkeypatch,
                                                       chunk_bytes):
  whole = transcode.transcode(str(rec_dir), str(tmp_path / "whole"), num_shards=2,
                              num_workers=1)
  assert all(s.num_bytes < shard_writer.CHUNK_BYTES for s in whole.manifest.shards)
  monkeypatch.setattr(shard_writer, "CHUNK_BYTES", chunk_bytes)  # 1: a record per chunk
  chunked = transcode.transcode(str(rec_dir), str(tmp_path / "chunked"), num_shards=2,
                                num_workers=1)
  assert chunked.manifest.shards == whole.manifest.shards
  for shard in whole.manifest.shards:
    assert ((tmp_path / "chunked" / shard.file).read_bytes()
            == (tmp_path / "whole" / shard.file).read_bytes())


def test_bytes_that_do_not_read_back_as_written_fail_the_shard(rec_dir, tmp_path,
                                                                 monkeypatch):
  real_write_all = shard_writer._write_all  # pylint: disable=protected-access
  calls = []

  def corrupting(f, data):  # the second chunk reaches the disk with one byte flipped
    calls.append(f.tell())
    if len(calls) == 2:
      data = bytearray(data)
      data[len(data) // 2] ^= 1
    real_write_all(f, memoryview(data))

  monkeypatch.setattr(shard_writer, "CHUNK_BYTES", 5000)
  monkeypatch.setattr(shard_writer, "_write_all", corrupting)
  with pytest.raises(OSError, match=r"train-00000-of-00001.tfrecord.tmp-\d+: the bytes read "
                     r"back at byte offset \d+ \(a chunk of \d+\) differ from the bytes "
                     "written"):
    transcode.transcode(str(rec_dir), str(tmp_path / "out"), num_shards=1, num_workers=1)
  assert [n for n in os.listdir(tmp_path / "out")] == [".rec2tfrecord"]


def test_bytes_after_the_shard_fail_it(rec_dir, tmp_path, monkeypatch):
  real_write_all = shard_writer._write_all  # pylint: disable=protected-access

  def appending(f, data):  # each chunk reads back right; the file ends with 4 bytes more
    real_write_all(f, data)
    real_write_all(f, memoryview(b"junk"))
    f.seek(-4, os.SEEK_CUR)

  monkeypatch.setattr(shard_writer, "_write_all", appending)
  with pytest.raises(OSError, match=r"train-00000-of-00001.tfrecord.tmp-\d+: unexpected bytes "
                     r"after byte offset \d+"):
    transcode.transcode(str(rec_dir), str(tmp_path / "out"), num_shards=1, num_workers=1)
  assert [n for n in os.listdir(tmp_path / "out")] == [".rec2tfrecord"]


def test_batch_framing_size_bound_holds_for_the_widest_fields():
  lengths = np.array([0, 20000, 3])
  framed = example_batch.layout(lengths, np.array([-1, 2**62, 0]), np.array([-1, 0, 2**40]))
  assert len(framed.buffer) <= example_batch.size_bound(lengths)
  assert len(framed.buffer) >= example_batch.size_bound(lengths) - 3 * 120  # not loose
