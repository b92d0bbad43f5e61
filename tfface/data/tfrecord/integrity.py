"""Are a TFRecord directory's shards the ones its manifest describes? Without TensorFlow.

Three checks, cheapest first, for the trainer and `inspect_data --verify`:

* `check_shard_sizes`: a `stat` per shard against the sizes that format 2
  manifests record; catches missing and truncated or extended shards in
  milliseconds, before any training starts.
* `verify_shards`: every byte of every shard against the manifest's digest
  (and record count); catches anything, at disk speed.
* `find_corrupt_record`: the first record of one shard whose framing or
  CRC-32C is wrong, by byte offset: where a bad shard went bad.
"""
import os

from tfface import progress as progress_lib
from tfface.data.tfrecord import framing
from tfface.data.tfrecord import schema


def check_shard_sizes(data_dir: str, manifest: schema.Manifest):
  """Checks that every shard exists and has the size the manifest records.

  Format 1 manifests record no sizes; for them this only checks the size
  that the record count implies at least (16 framing bytes per record), so
  it catches missing, empty and badly truncated shards, not all.

  Raises:
    ValueError: the first shard that is missing or of the wrong size,
      e.g. `"PATH: 1000 bytes on disk, manifest.json records 2000"`.
  """
  for shard in manifest.shards:
    path = os.path.join(data_dir, shard.file)
    try:
      size = os.path.getsize(path)
    except FileNotFoundError:
      raise ValueError(f"{path}: missing; {schema.MANIFEST_NAME} lists it with "
                       f"{shard.num_records} records") from None
    if shard.num_bytes is not None and size != shard.num_bytes:
      raise ValueError(f"{path}: {size} bytes on disk, {schema.MANIFEST_NAME} records "
                       f"{shard.num_bytes}; the shard is damaged or from another transcode "
                       "(rerun rec2tfrecord)")
    least = framing.OVERHEAD * shard.num_records
    if shard.num_bytes is None and size < least:
      raise ValueError(f"{path}: {size} bytes on disk, too few for the {shard.num_records} "
                       f"records {schema.MANIFEST_NAME} records (at least {least}); the "
                       "shard is truncated (rerun rec2tfrecord)")


def find_corrupt_record(path: str) -> tuple[int, str] | None:
  """`(byte_offset, reason)` of the first record with bad framing or CRC, or None.

  Checks every record's length CRC and data CRC (masked CRC-32C, as
  TFRecord writes them) and that the last record ends at the end of the file.
  """
  try:
    for _ in framing.iter_records(path):
      pass
  except framing.CorruptRecord as e:
    return e.offset, e.reason
  return None


def verify_shards(data_dir: str, manifest: schema.Manifest,
                  progress: bool = False) -> list[tuple[str, str]]:
  """Reads every shard whole and compares it with the manifest.

  Args:
    data_dir: the TFRecord directory.
    manifest: its manifest (`schema.load_manifest(data_dir)`).
    progress: show bytes read, rate and ETA on stderr (`tfface.progress`).

  Returns:
    `(path, problem)` for every shard that is missing or whose size, record
    count or digest (of the manifest's algorithm) differs from the
    manifest; for a digest mismatch the problem names the first corrupt
    record's byte offset where the framing or a CRC shows it. Empty when
    all shards are intact.
  """
  paths = manifest.shard_paths(data_dir)
  present = [p for p in paths if os.path.exists(p)]
  problems = []
  total = sum(os.path.getsize(p) for p in present)
  with progress_lib.progress(total=total, desc=f"verify {data_dir}", unit="B",
                             unit_scale=True, disable=not progress) as bar:
    for shard, path in zip(manifest.shards, paths):
      if path not in present:
        problems.append((path, f"missing; {schema.MANIFEST_NAME} lists it"))
        continue
      problem = _shard_problem(path, shard, manifest.digest_algorithm, bar.update)
      if problem:
        problems.append((path, problem))
  return problems


def _shard_problem(path: str, shard: schema.ShardInfo, algorithm: str, on_bytes) -> str | None:
  """What is wrong with one present shard, or None."""
  try:
    found = framing.scan(path, algorithm, on_bytes=on_bytes)
  except framing.CorruptRecord:
    found = None  # its framing breaks off: find_corrupt_record says where
  if found and found.num_records == shard.num_records and found.digest == shard.digest and (
      shard.num_bytes in (None, found.num_bytes)):
    return None
  parts = []
  corrupt = find_corrupt_record(path)  # the first bad record, CRCs checked
  if corrupt:
    parts.append(f"corrupt record at byte offset {corrupt[0]} ({corrupt[1]})")
  if found:
    parts.append(f"on disk {found.num_records} records, {found.num_bytes} bytes, "
                 f"{algorithm} {found.digest}")
  parts.append(f"{schema.MANIFEST_NAME} records {shard.num_records} records"
               + (f", {shard.num_bytes} bytes" if shard.num_bytes is not None else "")
               + f", {algorithm} {shard.digest}")
  return "; ".join(parts)
