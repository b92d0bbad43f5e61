"""Checking TFRecord shards against their manifest, and finding a corrupt record.

* `check_shard_sizes`: a `stat` per shard against the sizes the manifest
  records (cheap; the trainer runs it before anything slow).
* `find_corrupt_record`: walks one file's framing and checks every masked
  CRC-32C (the length's and the data's), as TensorFlow's reader does, and
  returns the byte offset of the first bad record: the place TensorFlow's
  `DataLossError` does not name the file of.
"""
import os
import struct

import google_crc32c

from tfface.data.tfrecord import schema

_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data) -> int:
  """TFRecord's masked CRC-32C of `data`."""
  crc = google_crc32c.value(bytes(data))
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def check_shard_sizes(data_dir: str, manifest: schema.Manifest):
  """Raises ValueError when a shard is missing or its size differs from the manifest's.

  Manifests that record no sizes (`num_bytes` absent) only get the
  existence check.
  """
  for shard in manifest.shards:
    path = os.path.join(data_dir, shard.file)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: shard listed in {schema.MANIFEST_NAME} does not "
                              "exist")
    expected = getattr(shard, "num_bytes", None)
    size = os.path.getsize(path)
    if expected is not None and size != expected:
      raise ValueError(f"{path}: {size} bytes on disk, {schema.MANIFEST_NAME} records "
                       f"{expected}; the shard is truncated or was replaced: transcode "
                       "it again (rec2tfrecord)")


def find_corrupt_record(path: str):
  """`(byte_offset, reason)` of the first record of `path` whose framing or CRC is wrong.

  Returns:
    None when every record checks out.
  """
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    offset = 0
    while offset < size:
      head = f.read(_HEADER.size)
      if len(head) < _HEADER.size:
        return offset, "truncated record header"
      length, length_crc = _HEADER.unpack(head)
      if masked_crc32c(head[:8]) != length_crc:
        return offset, "length CRC mismatch"
      if offset + 16 + length > size:
        return offset, f"record of {length} bytes runs past the end of the file"
      data = f.read(length)
      (data_crc,) = _CRC.unpack(f.read(4))
      if masked_crc32c(data) != data_crc:
        return offset, "data CRC mismatch"
      offset += 16 + length
  return None
