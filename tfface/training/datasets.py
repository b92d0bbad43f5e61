"""Named datasets (`--dataset emore`): where the data lives and what to verify on.

Each entry gives the default TFRecord directory (as written by
`tools/rec2tfrecord.py`), where its verification `.bin` files are and which
of them to verify on. The number of identities and images always comes from
the directory's `manifest.json`; the published figures here are
documentation and a cross-check. Recipes (learning rate, schedule, margin,
Partial FC) live in `configs/NAME.py`, one whole recipe per file.

| name       | identities | images     | verification          |
| ---------- | ---------- | ---------- | --------------------- |
| emore      | 85,742     | 5,822,653  | lfw, cfp_fp, agedb_30 |
| glint360k  | 360,232    | 17,091,657 | lfw, cfp_fp, agedb_30 |
| webface42m | 2,059,906  | 42,474,557 | lfw, cfp_fp, agedb_30 |
| custom     | manifest   | manifest   | `--val_bins`          |
| synthetic  | 300        | 9,000      | synth_val             |
"""
import dataclasses
import os

from tfface.data.tfrecord import schema


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A named dataset: locations, verification targets and published size."""

  name: str
  data_dir: str
  val_dir: str
  val_targets: tuple
  num_classes: int | None
  num_images: int | None


_INSIGHTFACE_TARGETS = ("lfw", "cfp_fp", "agedb_30")

DATASETS = {
    "emore": DatasetSpec("emore", "datasets/faces_emore/tfrecords", "datasets/faces_emore",
                         _INSIGHTFACE_TARGETS, 85_742, 5_822_653),
    "glint360k": DatasetSpec("glint360k", "datasets/glint360k/tfrecords",
                             "datasets/glint360k", _INSIGHTFACE_TARGETS, 360_232,
                             17_091_657),
    "webface42m": DatasetSpec("webface42m", "datasets/webface42m/tfrecords",
                              "datasets/webface42m", _INSIGHTFACE_TARGETS, 2_059_906,
                              42_474_557),
    "custom": DatasetSpec("custom", "datasets/custom/tfrecords", "datasets/custom", (),
                          None, None),
    # `make demo` writes demo_run/rec (generate) and demo_run/tfrecords.
    "synthetic": DatasetSpec("synthetic", "demo_run/tfrecords", "demo_run/rec",
                             ("synth_val",), 300, 9_000),
}


def get(name: str) -> DatasetSpec:
  """The `DatasetSpec` called `name`; ValueError naming the choices otherwise."""
  key = str(name).lower()
  if key not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
  return DATASETS[key]


def locate(config, name: str):
  """Points `config` at the named dataset: name, data and val dirs, targets (in place)."""
  spec = get(name)
  config.dataset = spec.name
  config.data_dir = spec.data_dir
  config.val_dir = spec.val_dir
  config.val_targets = tuple(spec.val_targets)
  return config


def resolve_val_bins(config, manifest=None) -> list[str]:
  """The verification `.bin` files of a run.

  `config.val_bins` (comma-separated paths) is taken as given and must
  exist. Otherwise each name in `config.val_targets` is looked up as
  `NAME.bin` in the TFRecord directory, the `.rec` directory the manifest
  was transcoded from, then `val_dir`; targets found nowhere are left out
  (the trainer logs which).

  Returns:
    Paths of existing `.bin` files.

  Raises:
    FileNotFoundError: a file named in `val_bins` does not exist.
  """
  if config.val_bins:
    paths = [p.strip() for p in str(config.val_bins).split(",") if p.strip()]
    for path in paths:
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: verification .bin not found (from --val_bins)")
    return paths
  # The data's own neighbourhood first: the TFRecord directory and the .rec
  # directory it was transcoded from; the dataset's default val_dir last.
  dirs = [config.data_dir]
  if manifest is not None and manifest.source.get("rec_dir"):
    dirs.append(manifest.source["rec_dir"])
  dirs.append(config.val_dir)
  found = []
  for name in config.val_targets:
    for directory in dirs:
      path = os.path.join(directory, f"{name}.bin") if directory else ""
      if path and os.path.isfile(path):
        found.append(path)
        break
  return found


def missing_targets(config, found) -> list[str]:
  """Names of `config.val_targets` that `resolve_val_bins` did not find."""
  stems = {os.path.splitext(os.path.basename(p))[0] for p in found}
  return [n for n in config.val_targets if n not in stems] if not config.val_bins else []


def load_manifest(config) -> schema.Manifest:
  """The manifest of `config.data_dir`, with a hint naming the transcode tool."""
  try:
    return schema.load_manifest(config.data_dir)
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f"{e}; write it with `python tools/rec2tfrecord.py --rec_dir=... "
        f"--output_dir={config.data_dir}` or pass --data_dir") from e
