"""Pure-Python MXNet RecordIO: golden bytes, split records, round trips, bad input."""
import os
import struct

import numpy as np
import pytest

from tfface.data.insightface import recordio

MAGIC = struct.pack("<I", 0xCED7230A)


def _head(cflag, length):
  return MAGIC + struct.pack("<I", (cflag << 29) | length)


def test_pack_header_scalar_label_golden():
  data = recordio.pack_header(recordio.IRHeader(0, 3.0, 7, 0), b"abc")
  assert data == struct.pack("<IfQQ", 0, 3.0, 7, 0) + b"abc"
  header, rest = recordio.unpack_header(data)
  assert header == (0, 3.0, 7, 0) and rest == b"abc"


def test_pack_header_array_label_golden():
  data = recordio.pack_header(recordio.IRHeader(0, [5, 1], 9, 0), b"x")
  assert data == struct.pack("<IfQQ", 2, 0.0, 9, 0) + struct.pack("<ff", 5, 1) + b"x"
  header, rest = recordio.unpack_header(data)
  assert header.flag == 2 and header.label.tolist() == [5.0, 1.0] and rest == b"x"


def test_unpack_header_too_short():
  with pytest.raises(ValueError, match="announces 3 float32 labels"):
    recordio.unpack_header(struct.pack("<IfQQ", 3, 0.0, 1, 0) + b"\0" * 4, "f.rec: key 1")


@pytest.mark.parametrize("payload, expected", [
    (b"abcd", _head(0, 4) + b"abcd"),
    (b"abcde", _head(0, 5) + b"abcde\0\0\0"),
    # Magic at an aligned offset: split, the magic bytes dropped.
    (b"abcd" + MAGIC + b"efgh", _head(1, 4) + b"abcd" + _head(3, 4) + b"efgh"),
    # Unaligned magic stays inside the record (dmlc-core checks aligned words only).
    (b"a" + MAGIC + b"xyz", _head(0, 8) + b"a" + MAGIC + b"xyz"),
    (MAGIC + b"ab", _head(1, 0) + _head(3, 2) + b"ab\0\0"),
    (b"abcd" + MAGIC, _head(1, 4) + b"abcd" + _head(3, 0)),
    (MAGIC + MAGIC + b"abcd", _head(1, 0) + _head(2, 0) + _head(3, 4) + b"abcd"),
])
def test_encode_record_golden(payload, expected, tmp_path):
  assert recordio.encode_record(payload) == expected
  path = tmp_path / "one.rec"
  path.write_bytes(expected)
  with recordio.RecordIOReader(str(path)) as reader:
    assert [p for _, p in reader] == [payload]
    assert reader.read_at(0) == payload


def _random_payloads(n, seed=0):
  rng = np.random.default_rng(seed)
  payloads = []
  for i in range(n):
    data = bytearray(rng.bytes(int(rng.integers(0, 300))))
    if i % 3 == 0 and len(data) >= 16:  # plant magics, aligned and not
      pos = int(rng.integers(0, len(data) - 4))
      data[pos:pos + 4] = MAGIC
      data[4:8] = MAGIC
    payloads.append(bytes(data))
  return payloads


def test_round_trip_with_index(tmp_path):
  rec, idx = str(tmp_path / "t.rec"), str(tmp_path / "t.idx")
  payloads = _random_payloads(200)
  with recordio.RecordIOWriter(rec, idx) as writer:
    offsets = [writer.write(p, key=i * 2) for i, p in enumerate(payloads)]
  keys, idx_offsets = recordio.read_idx(idx)
  assert keys.tolist() == [i * 2 for i in range(200)] and idx_offsets.tolist() == offsets
  with recordio.RecordIOReader(rec) as reader:
    assert [p for _, p in reader] == payloads
    for i in (150, 3, 77):
      assert reader.read_at(offsets[i]) == payloads[i]
  assert recordio.scan_offsets(rec).tolist() == offsets
  with recordio.IndexedRecordIO(rec, idx) as indexed:
    assert indexed.read_idx(22) == payloads[11]
    assert [(k, p) for k, _, p in indexed] == [(i * 2, p) for i, p in enumerate(payloads)]
    with pytest.raises(KeyError, match="t.idx: no record with key 3"):
      indexed.read_idx(3)
  with recordio.IndexedRecordIO(rec) as ordinal:  # no .idx: keys number the records
    assert ordinal.keys.tolist() == list(range(200)) and ordinal.read_idx(11) == payloads[11]


def test_writer_leaves_nothing_on_error(tmp_path):
  rec = tmp_path / "t.rec"
  with pytest.raises(RuntimeError):
    with recordio.RecordIOWriter(str(rec), str(tmp_path / "t.idx")) as writer:
      writer.write(b"abc", key=0)
      raise RuntimeError("interrupted")
  assert os.listdir(tmp_path) == []


def _write(tmp_path, payloads):
  rec = str(tmp_path / "t.rec")
  with recordio.RecordIOWriter(rec) as writer:
    offsets = [writer.write(p) for p in payloads]
  return rec, offsets


def test_bad_magic_names_offset(tmp_path):
  rec, offsets = _write(tmp_path, [b"a" * 8, b"b" * 8, b"c" * 8])
  data = bytearray(open(rec, "rb").read())
  data[offsets[2]] ^= 0xFF
  open(rec, "wb").write(bytes(data))
  with pytest.raises(ValueError, match=f"bad magic .* at byte offset {offsets[2]}"):
    with recordio.RecordIOReader(rec) as reader:
      list(reader)


def test_truncated_record_names_offset(tmp_path):
  rec, offsets = _write(tmp_path, [b"a" * 8, b"b" * 100])
  os.truncate(rec, os.path.getsize(rec) - 10)
  with pytest.raises(ValueError, match=f"truncated record at byte offset {offsets[1]}"):
    with recordio.RecordIOReader(rec) as reader:
      list(reader)


def test_offset_past_end_and_continuation_part(tmp_path):
  rec, _ = _write(tmp_path, [b"abcd" + MAGIC + b"efgh"])
  with recordio.RecordIOReader(rec) as reader:
    with pytest.raises(ValueError, match="outside the file"):
      reader.read_at(10_000)
    with pytest.raises(ValueError, match="continuation part"):
      reader.read_at(12)  # the second part of the split record


@pytest.mark.parametrize("text", [
    "0\t0\n1\t40\n", "0 0\r\n1 40\r\n", "+1\t0\n2\t-8\n", "\n0\t0\n\n1\t8", "7\t12\n",
    "1_0\t0\n", "0\t99999999999999999999\n", " 3\t 4 \n", "0\t007\n", "1\t2\n3\t4\t\n"])
def test_fast_idx_reader_agrees_with_the_exact_one_or_leaves_it_the_file(tmp_path, text):
  idx = tmp_path / "t.idx"
  idx.write_text(text)
  exact = []
  for line in text.splitlines():
    if line.split():
      exact.append([int(field) for field in line.split()])
  fast = recordio._read_idx_fast(str(idx))  # pylint: disable=protected-access
  if fast is not None:
    assert np.stack(fast, axis=1).tolist() == exact
  else:  # only for what it cannot vouch for: underscores, int64 overflow
    assert "_" in text or "9" * 19 in text
  if "9" * 19 in text:  # beyond int64: the exact reader names the line
    with pytest.raises(ValueError, match=r"t.idx: line 1: expected 'key<TAB>byte_offset'"):
      recordio.read_idx(str(idx))
    return
  keys, offsets = recordio.read_idx(str(idx))
  assert np.stack([keys, offsets], axis=1).tolist() == exact


def test_read_idx_errors(tmp_path):
  idx = tmp_path / "t.idx"
  idx.write_text("0\t0\n1 x\n")
  with pytest.raises(ValueError, match="line 2"):
    recordio.read_idx(str(idx))
  idx.write_text("0\t0\n5\t8\n5\t16\n")
  with pytest.raises(ValueError, match="key 5 appears more than once"):
    recordio.read_idx(str(idx))


def _write_indexed(tmp_path, count=4):
  rec, idx = str(tmp_path / "t.rec"), tmp_path / "t.idx"
  with recordio.RecordIOWriter(rec, str(idx)) as writer:
    offsets = [writer.write(bytes([65 + i]) * 40, key=i) for i in range(count)]
  return rec, idx, offsets


def test_iteration_rejects_an_idx_offset_that_is_not_a_record_start(tmp_path):
  rec, idx, offsets = _write_indexed(tmp_path)
  inside = offsets[1] + 16  # aligned, but inside record 1's payload
  lines = idx.read_text().splitlines(keepends=True)
  lines[1] = f"1\t{inside}\n"
  idx.write_text("\n" + "".join(lines))  # a blank first line: line numbers still right
  with recordio.IndexedRecordIO(rec, str(idx)) as indexed:
    with pytest.raises(ValueError, match=(
        rf"t.idx: line 3: key 1 at byte offset {inside} is not where a record starts in "
        rf".*t.rec \(the records around it start at {offsets[1]} and {offsets[2]}\)")):
      list(indexed)
  lines[1] = f"1\t{offsets[1]}\n"
  lines[3] = f"3\t{offsets[3] + 8}\n"  # inside the last record
  idx.write_text("".join(lines))
  with recordio.IndexedRecordIO(rec, str(idx)) as indexed:
    with pytest.raises(ValueError, match=rf"t.idx: line 4: key 3 at byte offset "
                       rf"{offsets[3] + 8} is not where a record starts .*start at {offsets[3]}\)"):
      list(indexed)
  lines[3] = f"3\t{offsets[3]}\n"
  lines[1] = f"1\t{offsets[3] + 8}\n"  # a later record's: record 1 is met first, unlisted
  idx.write_text("".join(lines))
  with recordio.IndexedRecordIO(rec, str(idx)) as indexed:
    with pytest.raises(ValueError, match=(
        rf"t.rec: the record at byte offset {offsets[1]} has no entry in .*t.idx \(it lies "
        rf"between the records of key 0 and key 2; the .idx gives key 1 byte offset "
        rf"{offsets[3] + 8} \(line 2\)\)")):
      list(indexed)


def test_iteration_rejects_a_record_without_idx_entry(tmp_path):
  rec, idx, offsets = _write_indexed(tmp_path)
  lines = idx.read_text().splitlines(keepends=True)
  for missing in (2, 3):  # a record in the middle, the last record
    idx.write_text("".join(l for i, l in enumerate(lines) if i != missing))
    with recordio.IndexedRecordIO(rec, str(idx)) as indexed:
      with pytest.raises(ValueError, match=rf"t.rec: the record at byte offset "
                         rf"{offsets[missing]} has no entry in .*t.idx"):
        list(indexed)


def test_opening_rejects_unaligned_and_repeated_offsets(tmp_path):
  rec, idx, offsets = _write_indexed(tmp_path)
  idx.write_text(f"0\t0\n1\t{offsets[1] + 1}\n")
  with pytest.raises(ValueError, match=rf"t.idx: line 2: key 1 at byte offset {offsets[1] + 1} "
                     "is not where a record starts in .*multiples of 4"):
    recordio.IndexedRecordIO(rec, str(idx))
  idx.write_text(f"0\t0\n1\t{offsets[1]}\n\n2\t{offsets[1]}\n")
  with pytest.raises(ValueError, match=rf"t.idx: lines 2 and 4: keys 1 and 2 both have byte "
                     rf"offset {offsets[1]}"):
    recordio.IndexedRecordIO(rec, str(idx))


def test_offset_error_names_the_idx_line(tmp_path):
  rec, idx, offsets = _write_indexed(tmp_path)
  lines = idx.read_text().splitlines(keepends=True)
  lines[2] = f"2\t{offsets[1] + 16}\n"
  idx.write_text("".join(lines))
  with recordio.IndexedRecordIO(rec, str(idx)) as indexed:
    assert indexed.explain_offset(offsets[1] + 16) == (
        f"{idx}: line 3: key 2 at byte offset {offsets[1] + 16} is not where a record "
        f"starts in {rec} (the records around it start at {offsets[1]} and {offsets[2]})")
    assert indexed.explain_offset(offsets[1]) is None  # a record start: the .idx is right
    assert indexed.explain_offset(5) is None  # not an .idx offset
