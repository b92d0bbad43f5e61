"""The TFRecord layout that `rec2tfrecord` writes and the input pipeline reads.

One `tf.train.Example` per face image:

* `image/encoded`: the JPEG bytes exactly as stored in the `.rec` record.
* `image/class/label`: int64 identity label in `[0, num_classes)`.
* `image/source_key`: int64 key of the record in the source `.rec`.

Shards are `train-00000-of-00016.tfrecord` ... beside a `manifest.json`
describing them (see `Manifest`). Manifest format 2 records each shard's
size and a digest whose algorithm it names; format 1 (SHA-256 only, no
sizes) is still read.
"""
import dataclasses
import json
import os
from typing import Any

from tfface import atomic
from tfface.data.tfrecord import digest

FEATURE_IMAGE = "image/encoded"
FEATURE_LABEL = "image/class/label"
FEATURE_KEY = "image/source_key"

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_name(index: int, count: int, split: str = "train") -> str:
  """File name of shard `index` of `count` (e.g. `train-00003-of-00016.tfrecord`)."""
  return SHARD_PATTERN.format(split=split, index=index, count=count)


@dataclasses.dataclass
class ShardInfo:
  """One shard as the manifest records it."""

  file: str
  num_records: int
  digest: str  # hex, of the manifest's `digest_algorithm`
  num_bytes: int | None = None  # None in format 1 manifests


@dataclasses.dataclass
class Manifest:
  """What a TFRecord directory holds; written last, after every shard is checked."""

  num_images: int
  num_classes: int
  image_size: list[int] | None
  seed: int
  shards: list[ShardInfo]
  source: dict[str, Any] = dataclasses.field(default_factory=dict)
  digest_algorithm: str = digest.DEFAULT
  format_version: int = MANIFEST_FORMAT_VERSION

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any], path: str = "<dict>") -> "Manifest":
    """Reads format 2, or format 1 (`sha256` per shard, no sizes)."""
    try:
      version = d.get("format_version")
      if version not in READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{path}: unsupported manifest format_version {version!r}; "
            f"this tfface reads versions {READABLE_FORMAT_VERSIONS}")
      if version == 1:
        algorithm = digest.SHA256
        shards = [ShardInfo(s["file"], int(s["num_records"]), s["sha256"]) for s in d["shards"]]
      else:
        algorithm = d["digest_algorithm"]
        if algorithm not in digest.ALGORITHMS:
          raise ValueError(f"{path}: unknown digest_algorithm {algorithm!r}; this tfface "
                           f"knows {', '.join(digest.ALGORITHMS)}")
        shards = [ShardInfo(s["file"], int(s["num_records"]), s["digest"], int(s["num_bytes"]))
                  for s in d["shards"]]
      return cls(
          num_images=int(d["num_images"]), num_classes=int(d["num_classes"]),
          image_size=d.get("image_size"), seed=int(d["seed"]), shards=shards,
          source=dict(d.get("source", {})), digest_algorithm=algorithm,
          format_version=version)
    except (KeyError, TypeError) as e:
      raise ValueError(f"{path}: malformed manifest ({e!r})") from e

  def shard_paths(self, directory: str) -> list[str]:
    return [os.path.join(directory, s.file) for s in self.shards]


def load_manifest(directory: str) -> Manifest:
  """Reads `directory/manifest.json`; raises FileNotFoundError/ValueError naming the file."""
  path = os.path.join(directory, MANIFEST_NAME)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path}: no manifest; is {directory!r} a directory written by rec2tfrecord?")
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  return Manifest.from_dict(data, path)


def save_manifest(directory: str, manifest: Manifest) -> str:
  """Writes the manifest atomically (temporary file, then rename)."""
  path = os.path.join(directory, MANIFEST_NAME)
  atomic.write_text(path, manifest.to_json(), sync=True)
  return path
