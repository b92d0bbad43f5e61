"""Named datasets (`--dataset emore`): where the data lives and the recipe it trains with.

Each entry gives the default TFRecord directory (as written by
`tools/rec2tfrecord.py`), where its verification `.bin` files are, which of
them to verify on, and the recipe fields that go with the dataset. The
number of identities and images always comes from the directory's
`manifest.json`; the figures here are only documentation and a cross-check.

| name      | identities | images     | verification          | recipe          |
| --------- | ---------- | ---------- | --------------------- | --------------- |
| emore     | 85,742     | 5,822,653  | lfw, cfp_fp, agedb_30 | paper (step)    |
| glint360k | 360,232    | 17,091,657 | lfw, cfp_fp, agedb_30 | arcface_torch   |
| custom    | manifest   | manifest   | `--val_bins`          | paper, epochs   |
| synthetic | 300        | 9,000      | synth_val             | tiny, CPU demo  |

paper: SGD, lr 0.1 per 512 images, x0.1 at 100k and 160k of 180k steps of
512 images. arcface_torch: lr 0.1 per 1024 images, polynomial decay over 20
epochs, gradient-norm clip 5.
"""
import dataclasses
import os

from tfface.data.tfrecord import schema


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A named dataset: locations, verification targets, published size, recipe."""

  name: str
  data_dir: str
  val_dir: str
  val_targets: tuple
  num_classes: int | None
  num_images: int | None
  recipe: dict = dataclasses.field(default_factory=dict)


_INSIGHTFACE_TARGETS = ("lfw", "cfp_fp", "agedb_30")
_PAPER_RECIPE = {
    "base_lr": 0.1, "batch_size": 128, "schedule.kind": "step",
    "schedule.decay_at": (100_000 / 180_000, 160_000 / 180_000),
    "schedule.warmup_fraction": 0.0, "epochs": 180_000 * 512 / 5_822_653,
    "head.s": 64.0, "head.margin_warmup": 0.0, "head.kernel_init_std": 0.01,
    "clip_norm": None,
    "checkpoint_every": 2000, "verify_every": 2000,
    "log_every": 50,
}

DATASETS = {
    "emore": DatasetSpec(
        "emore", "datasets/faces_emore/tfrecords", "datasets/faces_emore",
        _INSIGHTFACE_TARGETS, 85_742, 5_822_653, _PAPER_RECIPE),
    "glint360k": DatasetSpec(
        "glint360k", "datasets/glint360k/tfrecords", "datasets/glint360k",
        _INSIGHTFACE_TARGETS, 360_232, 17_091_657,
        # arcface_torch: lr 0.1 for 8 x 128 = 1024 images, i.e. 0.05 per 512.
        dict(_PAPER_RECIPE, **{"base_lr": 0.05, "schedule.kind": "polynomial",
                               "schedule.power": 2.0, "epochs": 20.0,
                               "clip_norm": 5.0})),
    "custom": DatasetSpec(
        "custom", "datasets/custom/tfrecords", "datasets/custom", (), None, None,
        _PAPER_RECIPE),
    # `make demo` writes demo_run/rec (generate) and demo_run/tfrecords.
    # s = 8 instead of 64: the scale AdaCos derives for 300 classes
    # (sqrt(2) ln(C - 1)); with s = 64 the tiny model barely moves in two
    # epochs. lr 0.2 at the demo's batch of 32, written per 512 images.
    "synthetic": DatasetSpec(
        "synthetic", "demo_run/tfrecords", "demo_run/rec", ("synth_val",), 300, 9_000,
        {"base_lr": 0.2 * 512 / 32, "batch_size": 32, "schedule.kind": "step",
         "schedule.decay_at": (0.6, 0.85), "schedule.warmup_fraction": 0.0,
         "epochs": 2.0, "head.s": 8.0, "head.margin_warmup": 0.0,
         "head.kernel_init_std": 0.1, "clip_norm": None, "checkpoint_every": 100,
         "verify_every": 1000, "log_every": 20}),
}


def get(name: str) -> DatasetSpec:
  """The `DatasetSpec` called `name`; ValueError naming the choices otherwise."""
  key = str(name).lower()
  if key not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
  return DATASETS[key]


def apply_dataset(config, name: str):
  """Points `config` at the named dataset and applies its recipe (in place)."""
  spec = get(name)
  config.dataset = spec.name
  config.data_dir = spec.data_dir
  config.val_dir = spec.val_dir
  config.val_targets = tuple(spec.val_targets)
  for dotted, value in spec.recipe.items():
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
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
