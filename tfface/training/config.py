"""The training configuration: every field, its default, and how flags change it.

A run is described by one `ml_collections.ConfigDict`. `base_config()` holds
every field, with the ArcFace paper's recipe as the defaults and no dataset.
Each `configs/NAME.py` is a whole recipe: it starts from `base_config()`,
points at its dataset (`datasets.locate`) and sets the recipe's values, and
its docstring gives the command and the result the recipe reaches.

`tools/train.py` then applies the seed's shortcut flags with
`apply_shortcuts`, and `--config.FIELD=VALUE` overrides win over both:

* recipe shortcuts (`--dataset`, `--network`, `--loss`) may not contradict a
  value the config file itself set (a value that differs from
  `base_config()`): that is an error naming `--config.FIELD=...` as the way
  to override the file, never a silent overwrite;
* run shortcuts (`--data_dir`, `--val_bins`, `--pretrained`, `--lr`,
  `--batch_size` (the lr scales with it), `--total_steps`,
  `--checkpoint_every`, `--verify_every`, `--strategy`, `--cpu_replicas`,
  `--mixed_precision`) say where and how this run goes and simply set their
  field.

Learning rate: `base_lr` is the rate for a global batch of `reference_batch`
(0.1 for 512, the paper's recipe) and is scaled linearly with the actual
global batch (`learning_rate`). `lr`, set by `--lr`, is an absolute rate used
as given, like InsightFace's `--lr`.
"""
import difflib
import importlib.util
import math
import os

import ml_collections
from ml_collections import config_dict

from tfface.training import datasets

LOSSES = ("arcface", "cosface", "combined", "softmax", "triplet")
PARTIAL_FC_LOSSES = ("arcface", "cosface", "combined")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
SCHEDULES = ("step", "polynomial", "constant")
# "" is float32 everywhere; the mixed policies keep the head and loss float32.
PRECISIONS = ("", "mixed_float16", "mixed_bfloat16")
RECIPE_SHORTCUTS = ("dataset", "network", "loss")
DEFAULT_SAMPLE_RATE = 0.1  # arcface_torch's Partial FC default


def base_config() -> ml_collections.ConfigDict:
  """Every field of a training config; the ArcFace paper's r100 recipe, no dataset."""
  c = ml_collections.ConfigDict()
  c.network = "r100"
  c.backbone = ml_collections.ConfigDict({
      "embedding_size": 512,
      "dropout": 0.0,
      # Passed to `build_backbone` (units, widths, stem_width, ...); cleared
      # when `--network` names another backbone.
      "overrides": ml_collections.ConfigDict(),
  })
  c.loss = "arcface"
  c.head = ml_collections.ConfigDict({
      "s": 64.0,
      # None: the recipe's margin for `loss` (see tfface.models.HEAD_MARGINS).
      "m1": config_dict.placeholder(float),
      "m2": config_dict.placeholder(float),
      "m3": config_dict.placeholder(float),
      "easy_margin": False,
      # Class centres start as N(0, std^2) (arcface_torch: 0.01).
      "kernel_init_std": 0.01,
      # Fraction of the steps trained without the margin (s * cos logits)
      # before the margin applies: helps small models out of the start.
      "margin_warmup": 0.0,
      # Partial FC: class centres sharded over the replicas and sampled per
      # step (docs/distributed.md); for the margin losses only.
      "partial_fc": False,
      # Fraction of each shard's centres used per step (positives always);
      # None: 0.1 with partial_fc (arcface_torch's default).
      "sample_rate": config_dict.placeholder(float),
  })
  c.triplet = ml_collections.ConfigDict({
      "margin": 0.3,  # InsightFace's triplet_alpha
      "images_per_identity": 5,
      "mining": "batch_hard",
  })

  c.dataset = ""  # a name from tfface.training.datasets, or "" for none
  c.data_dir = ""
  c.val_dir = ""
  c.val_targets = ()  # names looked up as VAL_DIR/NAME.bin
  c.val_bins = ""  # comma-separated .bin paths; overrides val_targets
  c.num_classes = config_dict.placeholder(int)  # None: from manifest.json
  c.input = ml_collections.ConfigDict({
      "shuffle_buffer": 8192,
      "random_flip": True,
      "deterministic": False,
      "shuffle": True,
      # Keep the decoded training set in memory after the first epoch (small
      # datasets only: 37 KB per 112x112 image).
      "cache": False,
  })

  c.batch_size = 128  # per replica, as InsightFace's per_batch_size
  c.reference_batch = 512
  c.base_lr = 0.1  # at a global batch of reference_batch
  c.lr = config_dict.placeholder(float)  # absolute; overrides base_lr scaling
  c.momentum = 0.9
  c.weight_decay = 5e-4  # coupled (MXNet/PyTorch), added to the loss
  c.clip_norm = config_dict.placeholder(float)  # global gradient norm
  c.schedule = ml_collections.ConfigDict({
      "kind": "step",
      # Fractions of total_steps: the paper's 100k and 160k of 180k.
      "decay_at": (100_000 / 180_000, 160_000 / 180_000),
      "decay_factor": 0.1,
      "power": 2.0,  # polynomial decay
      "warmup_fraction": 0.0,
  })
  c.total_steps = config_dict.placeholder(int)  # None: epochs over the manifest
  # The paper's 180k steps of 512 images over MS1MV2's 5,822,653 images.
  c.epochs = 180_000 * 512 / 5_822_653

  c.pretrained = ""
  c.freeze_backbone_steps = 0
  c.checkpoint_every = 2000
  c.verify_every = 2000
  c.verify_batch_size = 64
  c.verify_at_start = False  # also verify the untrained model (the demo's "before")
  c.keep_checkpoints = 3
  c.log_every = 50
  # Steps run in one tf.function between host round trips (Model Garden's
  # name); loops also end at every log, checkpoint and verification step.
  c.steps_per_loop = 50
  # Compile the replica step with XLA (falls back with a warning where XLA
  # cannot compile it). None: on where a GPU or TPU trains, off on CPUs,
  # where it measured slower (docs/performance.md); Keras' "auto" does the same.
  c.jit_compile = config_dict.placeholder(bool)
  c.seed = 0
  c.strategy = "auto"
  c.cpu_replicas = 0
  c.mixed_precision = ""  # "", "mixed_float16" or "mixed_bfloat16"
  return c


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs `get_config()` of a config file such as `configs/emore.py`.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file has no `get_config()`.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such config file")
  spec = importlib.util.spec_from_file_location(
      f"tfface_config_{os.path.splitext(os.path.basename(path))[0]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path}: a config file must define get_config()")
  return module.get_config()


def field_paths(config, prefix="") -> list[str]:
  """Every dotted field name of `config` (`head.s`, `schedule.decay_at`, ...)."""
  paths = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict) and key != "overrides":
      paths += field_paths(value, path + ".")
    else:
      paths.append(path)
  return paths


def check_field(config, dotted: str):
  """Raises ValueError naming the nearest known fields when `dotted` is not a field.

  `backbone.overrides.*` is open: any keyword of `build_backbone` goes there.
  """
  if dotted.startswith("backbone.overrides.") and dotted.count(".") == 2:
    return
  known = field_paths(config)
  if dotted in known:
    return
  leaf = dotted.rsplit(".", 1)[-1]
  near = difflib.get_close_matches(dotted, known, n=3, cutoff=0.7)
  # A prefix or a part of the name (`jit` -> `jit_compile`) is a likely typo too.
  near += [k for k in known if leaf and leaf in k.rsplit(".", 1)[-1] and k not in near]
  if not near:  # a wrong leaf under a right parent: list that parent's fields
    parent = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    near = [k for k in known if parent and k.startswith(parent)]
  hint = f"; nearest known: {', '.join(near[:6])}" if near else ""
  raise ValueError(f"--config.{dotted}: no such config field{hint} "
                   "(every field: tfface/training/config.py)")


def apply_shortcuts(config, overrides=None, **shortcuts):
  """Applies the seed's shortcut flags, then the `--config.*` overrides.

  Args:
    config: the ConfigDict loaded from `--config` (modified in place).
    overrides: dict `{"dotted.field": value}` of `--config.*` flags, which
      take precedence over everything.
    **shortcuts: values of the recipe shortcuts `dataset`, `network`,
      `loss` and of the run shortcuts `lr`, `batch_size`, `data_dir`,
      `val_bins`, `total_steps`, `checkpoint_every`, `verify_every`,
      `strategy`, `cpu_replicas`, `mixed_precision`, `pretrained`; None
      leaves the field alone.

  Returns:
    The same ConfigDict.

  Raises:
    ValueError: an unknown name or field, or a recipe shortcut that
      contradicts the config file.
  """
  overrides = dict(overrides or {})
  for dotted in overrides:
    check_field(config, dotted)
  given = {k: v for k, v in shortcuts.items() if v is not None}
  if "dataset" in given:
    given["dataset"] = datasets.get(given["dataset"]).name  # a known name first
  base = base_config()
  for name in RECIPE_SHORTCUTS:
    if name not in given or name in overrides:
      continue
    value = given[name].lower() if isinstance(given[name], str) else given[name]
    if config[name] != base[name] and config[name] != value:
      raise ValueError(
          f"--{name}={given[name]} contradicts {name}={config[name]!r} set by the config "
          f"file; to change the file's value pass --config.{name}={given[name]} instead")
  if "dataset" in given:
    datasets.locate(config, given.pop("dataset"))
  # Another network or loss, by shortcut or by --config.*, drops what the file
  # tuned for its own: backbone overrides (a tiny r18's units are not r34's;
  # mbf takes none of them) and margins (one loss's m2 means something else
  # for another). --config.backbone.overrides.* / --config.head.m* given
  # with the change still apply, after.
  network = overrides.get("network", given.pop("network", None))
  if network is not None:
    network = str(network).lower()
    if network != config.network:
      config.backbone.overrides = ml_collections.ConfigDict()
    config.network = network
  loss = overrides.get("loss", given.pop("loss", None))
  if loss is not None:
    loss = str(loss).lower()
    if loss != config.loss:
      config.head.m1 = config.head.m2 = config.head.m3 = None
    config.loss = loss
  if given.get("mixed_precision") is True:
    given["mixed_precision"] = "mixed_float16"
  elif given.get("mixed_precision") is False:
    given["mixed_precision"] = ""
  for name, value in given.items():
    if name not in config:
      raise ValueError(f"unknown shortcut {name!r}")
    config[name] = value
  for dotted, value in overrides.items():
    _set_dotted(config, dotted, value)
  validate(config)
  return config


def _set_dotted(config, dotted, value):
  *parents, leaf = dotted.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def validate(config):
  """Raises ValueError for names and values no run can use."""
  if config.loss not in LOSSES:
    raise ValueError(f"unknown loss {config.loss!r}; expected one of {list(LOSSES)}")
  if config.strategy not in STRATEGIES:
    raise ValueError(f"unknown strategy {config.strategy!r}; expected one of "
                     f"{list(STRATEGIES)}")
  if config.schedule.kind not in SCHEDULES:
    raise ValueError(f"unknown schedule {config.schedule.kind!r}; expected one of "
                     f"{list(SCHEDULES)}")
  if config.mixed_precision not in PRECISIONS:
    raise ValueError(f"unknown mixed_precision {config.mixed_precision!r}; expected one "
                     f"of {list(PRECISIONS)}")
  for name in ("batch_size", "checkpoint_every", "verify_every", "log_every",
               "steps_per_loop", "verify_batch_size"):
    if config[name] < 1:
      raise ValueError(f"{name} must be >= 1; got {config[name]}")
  if config.total_steps is not None and config.total_steps < 1:
    raise ValueError(f"total_steps must be >= 1; got {config.total_steps}")
  _check_ranges(config)
  if config.head.partial_fc:
    if config.loss not in PARTIAL_FC_LOSSES:
      raise ValueError(f"head.partial_fc works with the {', '.join(PARTIAL_FC_LOSSES)} "
                       f"losses, not --loss={config.loss}")
    if config.head.sample_rate is None:
      config.head.sample_rate = DEFAULT_SAMPLE_RATE
  rate = config.head.sample_rate
  if rate is not None and not 0.0 < rate <= 1.0:
    raise ValueError(f"head.sample_rate must be in (0, 1]; got {rate}")


def _check_ranges(config):
  """Raises ValueError for a number outside what any run can use (it used to train anyway)."""

  def need(dotted, ok, what, optional=False):
    value = config
    for part in dotted.split("."):
      value = value[part]
    if value is None and optional:
      return
    try:
      good = value is not None and ok(value)
    except TypeError:
      good = False
    if not good:
      raise ValueError(f"--config.{dotted}: must be {what}; got {value!r}")

  positive, fraction = "> 0", "in [0, 1)"
  need("epochs", lambda v: v > 0, positive)
  need("base_lr", lambda v: v > 0, positive)
  need("lr", lambda v: v > 0, positive, optional=True)
  need("reference_batch", lambda v: v >= 1, ">= 1")
  need("momentum", lambda v: 0 <= v < 1, fraction)
  need("weight_decay", lambda v: v >= 0, ">= 0")
  need("clip_norm", lambda v: v > 0, positive, optional=True)
  need("keep_checkpoints", lambda v: v >= 1, ">= 1")
  need("freeze_backbone_steps", lambda v: v >= 0, ">= 0")
  need("cpu_replicas", lambda v: v >= 0, ">= 0")
  need("backbone.embedding_size", lambda v: v >= 1, ">= 1")
  need("backbone.dropout", lambda v: 0 <= v < 1, fraction)
  need("head.s", lambda v: v > 0, positive)
  need("head.kernel_init_std", lambda v: v > 0, positive)
  need("head.margin_warmup", lambda v: 0 <= v < 1, fraction)
  need("triplet.margin", lambda v: v >= 0, ">= 0")
  need("triplet.images_per_identity", lambda v: v >= 2, ">= 2")
  need("input.shuffle_buffer", lambda v: v >= 1, ">= 1")
  need("schedule.decay_factor", lambda v: 0 < v <= 1, "in (0, 1]")
  need("schedule.power", lambda v: v > 0, positive)
  need("schedule.warmup_fraction", lambda v: 0 <= v < 1, fraction)
  need("schedule.decay_at", lambda v: all(0 < f < 1 for f in v) and list(v) == sorted(v),
       "increasing fractions of the run in (0, 1), e.g. (0.6, 0.85)")


def learning_rate(config, global_batch: int) -> float:
  """The peak learning rate: `--lr` as given, else `base_lr` scaled with the batch."""
  if config.lr is not None:
    return float(config.lr)
  return config.base_lr * global_batch / config.reference_batch


def total_steps(config, num_images: int, global_batch: int) -> int:
  """`total_steps` if set, else enough steps for `epochs` passes over the data."""
  if config.total_steps is not None:
    return int(config.total_steps)
  return max(1, math.ceil(config.epochs * num_images / global_batch))


def default_workdir(config) -> str:
  """`models/NETWORK-LOSS-DATASET`, the directory InsightFace's train.py used."""
  return f"models/{config.network}-{config.loss}-{config.dataset}"
