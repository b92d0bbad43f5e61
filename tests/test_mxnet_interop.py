"""Interoperability with the real MXNet RecordIO (mxnet 1.9.1 in its own venv).

Each scenario runs an mxnet script in the `.venv-mxnet` interpreter as a
subprocess and compares what both sides read and write.
"""
import hashlib
import json
import os
import struct
import subprocess
import textwrap

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfface.data.insightface import conversions
from tfface.data.insightface import rec as insightface_rec
from tfface.data.insightface import recordio
from tfface.data.tfrecord import schema
from tfface.data.transcode import transcode
from tfface.data.insightface import verification_bin

pytestmark = pytest.mark.mxnet
MAGIC = struct.pack("<I", 0xCED7230A)


def _run_mxnet(python, script, *args):
  proc = subprocess.run([python, "-c", textwrap.dedent(script), *map(str, args)],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  return json.loads(proc.stdout.strip().splitlines()[-1])


WRITE_INSIGHTFACE_REC = """
import json, struct, sys
import cv2, mxnet as mx, numpy as np
out = sys.argv[1]
magic = struct.pack('<I', 0xced7230a)
rec = mx.recordio.MXIndexedRecordIO(out + '/train.idx', out + '/train.rec', 'w')
rng = np.random.RandomState(0)
classes = [3, 2, 4]
n, k = sum(classes), len(classes)
payloads = {0: mx.recordio.pack(mx.recordio.IRHeader(0, [n + 1, n + 1 + k], 0, 0), b'')}
expected, key, ranges = {}, 1, []
for c, count in enumerate(classes):
  start = key
  for i in range(count):
    img = (rng.rand(112, 112, 3) * 255).astype(np.uint8)
    jpeg = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    if key == 2:  # the magic at an aligned offset: mxnet splits this record
      jpeg = jpeg[:100] + magic + jpeg[104:]
    label = float(c) if c == 1 else [float(c), 1.0]  # scalar and array labels
    payloads[key] = mx.recordio.pack(mx.recordio.IRHeader(0, label, key, 0), jpeg)
    expected[key] = [c, jpeg.hex()]
    key += 1
  ranges.append((start, key))
for c, (start, end) in enumerate(ranges):
  payloads[n + 1 + c] = mx.recordio.pack(mx.recordio.IRHeader(0, [start, end], n + 1 + c, 0), b'')
for key in sorted(payloads):
  rec.write_idx(key, payloads[key])
rec.close()
print(json.dumps({'images': expected, 'payloads': {k: v.hex() for k, v in payloads.items()}}))
"""


def test_mxnet_written_rec_reads_and_transcodes_byte_identically(mxnet_python, tmp_path):
  rec_dir = tmp_path / "rec"
  rec_dir.mkdir()
  result = _run_mxnet(mxnet_python, WRITE_INSIGHTFACE_REC, rec_dir)
  expected = {int(k): (v[0], bytes.fromhex(v[1])) for k, v in result["images"].items()}
  data = (rec_dir / "train.rec").read_bytes()
  flags = {struct.unpack_from("<I", data, i + 4)[0] >> 29
           for i in range(0, len(data) - 8, 4) if data[i:i + 4] == MAGIC}
  assert 1 in flags and 3 in flags  # mxnet really split a record
  with insightface_rec.InsightFaceRec(str(rec_dir)) as rec:
    assert rec.has_header and (rec.num_images, rec.num_classes) == (9, 3)
    assert {k: (l, b) for k, l, b in rec} == expected
  out = tmp_path / "tfrecords"
  transcode.transcode(str(rec_dir), str(out), num_shards=2, num_workers=1)
  parsed = {}
  for record in tf.data.TFRecordDataset(schema.load_manifest(str(out)).shard_paths(str(out))):
    example = tf.train.Example.FromString(record.numpy()).features.feature
    parsed[example[schema.FEATURE_KEY].int64_list.value[0]] = (
        example[schema.FEATURE_LABEL].int64_list.value[0],
        example[schema.FEATURE_IMAGE].bytes_list.value[0])
  assert parsed == expected
  # tfface's writer frames the same payloads into the very same bytes.
  payloads = {int(k): bytes.fromhex(v) for k, v in result["payloads"].items()}
  with recordio.RecordIOWriter(str(tmp_path / "t.rec"), str(tmp_path / "t.idx")) as writer:
    for key in sorted(payloads):
      writer.write(payloads[key], key)
  assert (tmp_path / "t.rec").read_bytes() == data
  assert (tmp_path / "t.idx").read_text() == (rec_dir / "train.idx").read_text()


READ_WITH_MXNET = """
import hashlib, json, sys
import mxnet as mx
out = sys.argv[1]
rec = mx.recordio.MXIndexedRecordIO(out + '/train.idx', out + '/train.rec', 'r')
records = {}
for key in rec.keys:
  header, payload = mx.recordio.unpack(rec.read_idx(key))
  label = header.label.tolist() if header.flag > 0 else float(header.label)
  records[key] = [header.flag, label, header.id, hashlib.sha256(payload).hexdigest()]
print(json.dumps(records))
"""


def _jpeg_with_magic_in_a_comment(image):
  jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
  # SOI, then a COM segment whose text holds the magic at file offset 8: with
  # the 24-byte IRHeader before it, that is an aligned offset in the record.
  comment = b"\0\0" + MAGIC + b"tfface"
  return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def test_img2rec_output_reads_with_mxnet(mxnet_python, tmp_path):
  rng = np.random.default_rng(0)
  files = {}
  for person, count in (("alice", 2), ("bob", 3), ("carol", 1)):
    os.makedirs(tmp_path / "img" / person)
    for i in range(count):
      image = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
      data = (_jpeg_with_magic_in_a_comment(image) if person == "bob" and i == 1 else
              cv2.imencode(".jpg", image)[1].tobytes())
      (tmp_path / "img" / person / f"{i}.jpg").write_bytes(data)
      files[len(files) + 1] = data
  result = conversions.images_to_rec(str(tmp_path / "img"), str(tmp_path / "rec"))
  assert (result.num_images, result.num_classes) == (6, 3)
  assert recordio.encode_record(recordio.pack_header(
      recordio.IRHeader(0, 1, 4, 0), files[4])).count(MAGIC) >= 2  # it is split
  records = {int(k): v for k, v in _run_mxnet(mxnet_python, READ_WITH_MXNET,
                                              tmp_path / "rec").items()}
  assert records[0][:2] == [2, [7.0, 10.0]]  # header: identities at keys 7..9
  labels = [0, 0, 1, 1, 1, 2]
  for key, data in files.items():
    assert records[key] == [0, labels[key - 1], key, hashlib.sha256(data).hexdigest()]
  assert [records[k][1] for k in (7, 8, 9)] == [[1.0, 3.0], [3.0, 6.0], [6.0, 7.0]]


WRITE_BIN = """
import json, pickle, sys
import cv2, numpy as np
images = [cv2.imencode('.jpg', np.full((112, 112, 3), v, np.uint8))[1] for v in (0, 80, 160, 240)]
for protocol in (2, pickle.HIGHEST_PROTOCOL):
  with open(sys.argv[1] + '/p%d.bin' % protocol, 'wb') as f:
    pickle.dump((images, [True, False]), f, protocol=protocol)
print(json.dumps({'numpy': np.__version__, 'images': [i.tobytes().hex() for i in images]}))
"""


def test_bin_pickled_with_numpy1_arrays_loads(mxnet_python, tmp_path):
  result = _run_mxnet(mxnet_python, WRITE_BIN, tmp_path)
  assert result["numpy"].startswith("1.")
  for name in sorted(os.listdir(tmp_path)):
    vbin = verification_bin.load_bin(str(tmp_path / name))
    assert vbin.images == [bytes.fromhex(h) for h in result["images"]]
    assert vbin.issame.tolist() == [True, False]
