"""The InsightFace dataset view: header / header-less layouts, labels, odd datasets."""
import os

import numpy as np
import pytest

from tfface.data.insightface import rec as insightface_rec
from tfface.data.insightface import rec_writer
from tfface.data.insightface import recordio

JPEG = b"\xff\xd8\xff\xe0"


def _image(label, i):
  return JPEG + f"{label}-{i}".encode()


def _write_header_layout(directory, counts):
  with rec_writer.InsightFaceWriter(str(directory)) as writer:
    for label, count in enumerate(counts):
      for i in range(count):
        writer.add(label, _image(label, i))


def _write_raw(directory, records, property_text=None):
  """records: list of (key, IRHeader, payload) written in order with an .idx."""
  os.makedirs(directory, exist_ok=True)
  with recordio.RecordIOWriter(str(directory / "train.rec"), str(directory / "train.idx")) as w:
    for key, header, payload in records:
      w.write(recordio.pack_header(header, payload), key)
  if property_text is not None:
    (directory / "property").write_text(property_text)


def test_header_layout(tmp_path):
  _write_header_layout(tmp_path, [3, 1, 2])
  assert (tmp_path / "property").read_text() == "3,112,112"
  with insightface_rec.InsightFaceRec(str(tmp_path)) as rec:
    assert rec.has_header and rec.num_images == 6 and rec.num_classes == 3
    assert rec.image_keys.tolist() == [1, 2, 3, 4, 5, 6]
    assert rec.identity_keys.tolist() == [7, 8, 9]
    assert rec.read_record(8)[0].label.tolist() == [4.0, 5.0]  # class 1: keys [4, 5)
    assert rec.read_record(0)[0].label.tolist() == [7.0, 10.0]
    assert [(k, l) for k, l, _ in rec] == [(1, 0), (2, 0), (3, 0), (4, 1), (5, 2), (6, 2)]
    assert rec.read(5) == (2, _image(2, 0)) and rec.label_of(4) == 1
    assert rec.labels().tolist() == [0, 0, 0, 1, 2, 2]
    assert rec.identity_records_agree and not rec.notes


def test_header_less_scalar_labels_like_im2rec(tmp_path):
  labels = [4, 0, 2, 2, 1]
  _write_raw(tmp_path, [(k, recordio.IRHeader(0, l, k, 0), _image(l, k))
                        for k, l in enumerate(labels)])
  with insightface_rec.InsightFaceRec(str(tmp_path)) as rec:
    assert not rec.has_header and rec.num_images == 5
    assert rec.image_keys.tolist() == [0, 1, 2, 3, 4]
    assert rec.labels().tolist() == labels
    assert rec.num_classes == 5  # no property, no identity records: max label + 1
    assert rec.read(0) == (4, _image(4, 0))


def test_array_labels_take_the_first_value(tmp_path):
  records = [(0, recordio.IRHeader(2, [5, 7], 0, 0), b"")]
  records += [(k, recordio.IRHeader(0, [c, 1.0, 0.5], k, 0), _image(c, k))
              for k, c in ((1, 0), (2, 0), (3, 1), (4, 1))]
  records += [(5, recordio.IRHeader(0, [1, 3], 5, 0), b""),
              (6, recordio.IRHeader(0, [3, 5], 6, 0), b"")]
  _write_raw(tmp_path, records)
  with insightface_rec.InsightFaceRec(str(tmp_path)) as rec:
    assert rec.has_header and rec.num_images == 4 and rec.num_classes == 2
    assert [(k, l) for k, l, _ in rec] == [(1, 0), (2, 0), (3, 1), (4, 1)]


def test_without_idx_keys_are_record_ordinals(tmp_path):
  _write_header_layout(tmp_path, [2, 2])
  with insightface_rec.InsightFaceRec((str(tmp_path / "train.rec"), None)) as rec:
    assert rec.has_header and rec.num_images == 4
    assert [(k, l, b) for k, l, b in rec] == [
        (1, 0, _image(0, 0)), (2, 0, _image(0, 1)), (3, 1, _image(1, 0)), (4, 1, _image(1, 1))]


def test_identity_records_that_disagree_use_image_labels(tmp_path):
  # As in Glint360K: identity record c does not describe the images of class c.
  records = [(0, recordio.IRHeader(2, [5, 7], 0, 0), b"")]
  records += [(k, recordio.IRHeader(0, c, k, 0), _image(c, k))
              for k, c in ((1, 0), (2, 0), (3, 1), (4, 2))]
  records += [(5, recordio.IRHeader(0, [1, 2], 5, 0), b""),
              (6, recordio.IRHeader(0, [2, 5], 6, 0), b"")]
  _write_raw(tmp_path, records)
  with insightface_rec.InsightFaceRec(str(tmp_path)) as rec:
    assert not rec.identity_records_agree
    assert any("disagree" in n and "using the image labels" in n for n in rec.notes)
    assert rec.declared_num_classes is None and rec.num_classes == 3


def test_labels_above_float32_precision_warn(tmp_path):
  big = 2**24 + 2  # exactly representable, but above the exact-integer limit
  _write_raw(tmp_path, [(0, recordio.IRHeader(0, big, 0, 0), JPEG)], f"{big + 1},112,112")
  with insightface_rec.InsightFaceRec(str(tmp_path)) as rec:
    assert any("exceed 2**24" in n for n in rec.notes)
    assert rec.read(0)[0] == big
    assert any("> 2**24" in n for n in rec.notes)
  assert float(np.float32(17186135)) == 17186136  # why the warning exists


def test_property_errors_name_the_file(tmp_path):
  path = tmp_path / "property"
  path.write_text("85742,112\n")
  with pytest.raises(ValueError, match=f"{path}: line 1"):
    insightface_rec.read_property(str(path))
  path.write_text("85742,112,112")
  assert insightface_rec.read_property(str(path)) == insightface_rec.Property(85742, 112, 112)


def test_idx_offset_past_end(tmp_path):
  _write_header_layout(tmp_path, [2])
  with open(tmp_path / "train.idx", "a") as f:
    f.write("99\t123456\n")
  with pytest.raises(ValueError, match=r"train.idx: line 5: key 99 has byte offset 123456"):
    insightface_rec.InsightFaceRec(str(tmp_path))


def test_missing_image_key_in_idx(tmp_path):
  _write_header_layout(tmp_path, [3])
  lines = (tmp_path / "train.idx").read_text().splitlines(keepends=True)
  (tmp_path / "train.idx").write_text("".join(l for l in lines if not l.startswith("2\t")))
  with insightface_rec.InsightFaceRec(str(tmp_path)) as rec:
    with pytest.raises(ValueError, match="no record with key 2: an image key .* missing"):
      rec.image_offsets()
    with pytest.raises(KeyError, match="no record with key 2"):
      rec.read(2)
    with pytest.raises(ValueError, match="no record with key 2: an image key .* missing"):
      list(rec)  # not two images out of three


def test_iteration_rejects_an_idx_that_does_not_match_the_rec(tmp_path):
  _write_header_layout(tmp_path, [3])
  idx = tmp_path / "train.idx"
  lines = idx.read_text().splitlines(keepends=True)
  offsets = [int(l.split()[1]) for l in lines]
  lines[2] = f"2\t{offsets[2] + 8}\n"  # key 2 points inside its record
  idx.write_text("".join(lines))
  with insightface_rec.InsightFaceRec(str(tmp_path)) as rec:
    with pytest.raises(ValueError, match=rf"train.idx: line 3: key 2 at byte offset "
                       rf"{offsets[2] + 8} is not where a record starts"):
      list(rec)
  lines[2] = f"2\t{offsets[2]}\n"
  idx.write_text("".join(lines))
  end = (tmp_path / "train.rec").stat().st_size
  with open(tmp_path / "train.rec", "ab") as f:  # a record the .idx does not list
    f.write(recordio.encode_record(recordio.pack_header(recordio.IRHeader(0, 0, 9, 0), JPEG)))
  with insightface_rec.InsightFaceRec(str(tmp_path)) as rec:
    with pytest.raises(ValueError, match=rf"train.rec: the record at byte offset {end} has "
                       r"no entry in .*train.idx \(it lies between the records of key 4\)"):
      list(rec)


def test_writer_requires_grouped_labels(tmp_path):
  with pytest.raises(ValueError, match="non-decreasing"):
    with rec_writer.InsightFaceWriter(str(tmp_path)) as writer:
      writer.add(1, JPEG)
      writer.add(0, JPEG)
  assert not (tmp_path / "train.rec").exists()
