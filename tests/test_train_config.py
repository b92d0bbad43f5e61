"""Configs, shortcut flags, learning-rate scaling and schedules."""
import glob
import os
import re

import pytest

from conftest import REPO
from conftest import run_tool
from tfface.data.tfrecord import schema
from tfface.training import config as config_lib
from tfface.training import datasets
from tfface.training import schedules

CONFIGS = sorted(p for p in glob.glob(str(REPO / "configs" / "*.py"))
                 if not os.path.basename(p).startswith("_"))  # not __init__.py


def _load(name):
  return config_lib.load_config_file(str(REPO / "configs" / f"{name}.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_validates_and_documents_its_command(path):
  config = config_lib.load_config_file(path)
  config_lib.validate(config)
  with open(path) as f:
    text = f.read()
  assert "python tools/train.py" in text  # the docstring carries the command


def test_paper_recipe_in_steps_and_learning_rate():
  config = _load("emore")
  assert (config.network, config.loss, config.dataset) == ("r100", "arcface", "emore")
  # 512 images per step over MS1MV2: the paper's 180k steps, decays at 100k/160k.
  steps = config_lib.total_steps(config, 5_822_653, 512)
  assert steps == 180_000
  schedule = schedules.from_config(config.schedule, config_lib.learning_rate(config, 512),
                                   steps)
  assert schedule.boundaries == (100_000, 160_000)
  assert [round(float(schedule(s)), 6) for s in (0, 99_999, 100_000, 160_000)] == [
      0.1, 0.1, 0.01, 0.001]
  # One GPU with 128 images: lr scaled down 4x, and 4x the steps.
  assert config_lib.learning_rate(config, 128) == pytest.approx(0.025)
  assert config_lib.total_steps(config, 5_822_653, 128) == 720_000


def test_lr_flag_is_absolute():
  config = config_lib.apply_shortcuts(_load("synthetic"), lr=0.005)
  assert config_lib.learning_rate(config, 64) == 0.005
  assert config_lib.learning_rate(config, 1024) == 0.005


def test_polynomial_and_warmup_schedules():
  poly = schedules.FaceSchedule(0.1, 100, "polynomial", power=2.0, warmup_steps=10)
  values = [float(poly(s)) for s in (0, 4, 9, 10, 55, 100)]
  assert values == pytest.approx([0.01, 0.05, 0.1, 0.1, 0.1 * 0.5 ** 2, 0.0], abs=1e-7)
  constant = schedules.FaceSchedule(0.3, 10, "constant")
  assert float(constant(7)) == pytest.approx(0.3)
  restored = schedules.FaceSchedule.from_config(poly.get_config())
  assert float(restored(30)) == pytest.approx(float(poly(30)))


def test_seed_shortcuts():
  config = config_lib.apply_shortcuts(_load("emore"), network="r50", loss="cosface",
                                      dataset="emore")
  assert (config.network, config.loss) == ("r50", "cosface")
  assert config.head.m2 is None and config.head.s == 64.0  # cosface's own margin
  assert config.val_targets == ("lfw", "cfp_fp", "agedb_30")
  assert config_lib.default_workdir(config) == "models/r50-cosface-emore"

  # The fourth seed command (no --dataset: emore is the default config, as
  # it was InsightFace's default dataset): triplet fine-tuning of the softmax model.
  config = config_lib.apply_shortcuts(_load("emore"), network="m1", loss="triplet",
                                      lr=0.005, pretrained="./models/m1-softmax-emore")
  assert (config.network, config.loss, config.dataset) == ("m1", "triplet", "emore")
  assert config.pretrained == "./models/m1-softmax-emore"
  assert config.triplet.images_per_identity == 5
  # Another network, by --network or --config.network, clears the backbone
  # overrides the file tuned for its own; overrides given with it apply.
  assert _load("synthetic").backbone.overrides.to_dict()
  config = config_lib.apply_shortcuts(_load("emore"), {"backbone.overrides.units": (1, 1)},
                                      network="r18")
  assert config.network == "r18" and config.backbone.overrides.units == (1, 1)
  config = config_lib.apply_shortcuts(_load("synthetic"), {"network": "mbf"})
  assert config.network == "mbf" and not config.backbone.overrides.to_dict()
  config = config_lib.apply_shortcuts(_load("synthetic"), {"network": "r34",
                                                           "backbone.overrides.units": (1, 1)})
  assert config.backbone.overrides.to_dict() == {"units": (1, 1)}
  config = config_lib.apply_shortcuts(_load("synthetic"), {"network": "r18"})  # the file's
  assert config.backbone.overrides.to_dict() == _load("synthetic").backbone.overrides.to_dict()


def test_loss_change_resets_tuned_margins_and_overrides_win():
  config = _load("synthetic")
  config.head.m2 = 0.2
  config = config_lib.apply_shortcuts(config, loss="cosface")
  assert config.head.m2 is None
  config = _load("synthetic")
  config.head.m2 = 0.2
  assert config_lib.apply_shortcuts(config, {"loss": "cosface"}).head.m2 is None
  config = _load("synthetic")
  config.head.m3 = 0.3
  config = config_lib.apply_shortcuts(config, {"loss": "cosface", "head.m3": 0.25})
  assert config.head.m3 == 0.25
  config = config_lib.apply_shortcuts(_load("emore"), {"head.s": 16.0, "base_lr": 0.2},
                                      dataset="emore")
  assert config.head.s == 16.0 and config.base_lr == 0.2  # --config.* beat the file
  assert config.data_dir == "datasets/faces_emore/tfrecords"


@pytest.mark.parametrize("name, shortcut, value", [
    ("synthetic", "dataset", "emore"), ("synthetic", "network", "r50"),
    ("glint360k", "loss", "arcface")])
def test_a_shortcut_may_not_contradict_the_config_file(name, shortcut, value):
  # The config file sets these; a shortcut used to overwrite them silently.
  with pytest.raises(ValueError, match=rf"--{shortcut}={value} contradicts {shortcut}=.* "
                     rf"set by the config file; .* --config\.{shortcut}={value}"):
    config_lib.apply_shortcuts(_load(name), **{shortcut: value})
  # The explicit override is how to change the file's value.
  config = config_lib.apply_shortcuts(_load(name), {shortcut: value})
  assert config[shortcut] == value
  # Values the file did not change (the base recipe's) take the shortcut.
  config = config_lib.apply_shortcuts(_load("emore"), **{shortcut: value})
  assert config[shortcut] == value
  # Run shortcuts (where and how long) always apply.
  config = config_lib.apply_shortcuts(_load("synthetic"), data_dir="/d", total_steps=9,
                                      checkpoint_every=3, lr=0.01, batch_size=8)
  assert (config.data_dir, config.total_steps, config.checkpoint_every,
          config.batch_size) == ("/d", 9, 3, 8)


def test_recipes_live_in_config_files_not_in_the_dataset_table():
  synthetic = _load("synthetic")
  assert (synthetic.head.s, synthetic.batch_size, synthetic.base_lr) == (8.0, 32, 0.2)
  assert config_lib.learning_rate(synthetic, 32) == 0.2
  for name, spec in datasets.DATASETS.items():
    assert not hasattr(spec, "recipe"), name
    locate = config_lib.base_config()
    datasets.locate(locate, name)
    # Pointing at a dataset changes its location and targets, never the recipe.
    changed = {k for k in config_lib.field_paths(locate)
               if locate[k.split(".")[0]] != config_lib.base_config()[k.split(".")[0]]}
    assert changed <= {"dataset", "data_dir", "val_dir", "val_targets"}, changed
  glint, webface = _load("glint360k"), _load("webface42m")
  assert glint.head.partial_fc and glint.head.sample_rate == 0.1
  assert webface.head.partial_fc and webface.head.sample_rate == 0.2
  assert webface.dataset == "webface42m" and webface.head.m3 == 0.4


def test_unknown_config_field_is_one_line_naming_the_nearest(tmp_path):
  with pytest.raises(ValueError, match=r"--config\.head\.sampel_rate: no such config field; "
                     r"nearest known: head\.sample_rate"):
    config_lib.check_field(config_lib.base_config(), "head.sampel_rate")
  config_lib.check_field(config_lib.base_config(), "backbone.overrides.units")  # open
  proc = run_tool("train", "--config.head.no_such_field=1", check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "error: --config.head.no_such_field: no such config field; nearest known: "
      "head.easy_margin, head.kernel_init_std, head.m1, head.m2, head.m3, head.margin_warmup "
      "(every field: tfface/training/config.py)"], proc.stderr


def test_partial_fc_and_precision_settings_are_checked():
  config = _load("emore")
  config = config_lib.apply_shortcuts(config, {"head.partial_fc": True})
  assert config.head.sample_rate == config_lib.DEFAULT_SAMPLE_RATE == 0.1
  for loss in ("softmax", "triplet"):
    with pytest.raises(ValueError, match=f"partial_fc works with the arcface, cosface, "
                       f"combined losses, not --loss={loss}"):
      config_lib.apply_shortcuts(_load("emore"), {"head.partial_fc": True}, loss=loss)
  for rate in (0.0, 1.5, -0.1):
    with pytest.raises(ValueError, match=r"head.sample_rate must be in \(0, 1\]"):
      config_lib.apply_shortcuts(_load("emore"), {"head.partial_fc": True,
                                                  "head.sample_rate": rate})
  assert config_lib.apply_shortcuts(_load("emore"), mixed_precision=True).mixed_precision == (
      "mixed_float16")
  assert config_lib.apply_shortcuts(
      _load("emore"), mixed_precision="mixed_bfloat16").mixed_precision == "mixed_bfloat16"
  with pytest.raises(ValueError, match="unknown mixed_precision 'float8'"):
    config_lib.apply_shortcuts(_load("emore"), mixed_precision="float8")


def test_bad_names_are_rejected():
  with pytest.raises(ValueError, match="unknown dataset 'casia'"):
    config_lib.apply_shortcuts(_load("synthetic"), dataset="casia")
  with pytest.raises(ValueError, match="unknown loss 'sphereface'"):
    config_lib.apply_shortcuts(_load("synthetic"), loss="sphereface")
  with pytest.raises(FileNotFoundError, match="nope.py"):
    config_lib.load_config_file("configs/nope.py")


def test_val_bins_resolution(tmp_path):
  config = _load("synthetic")
  config.val_dir = str(tmp_path)
  config.data_dir = str(tmp_path / "tfrecords")
  assert datasets.resolve_val_bins(config) == []
  assert datasets.missing_targets(config, []) == ["synth_val"]
  (tmp_path / "synth_val.bin").write_bytes(b"")
  assert datasets.resolve_val_bins(config) == [str(tmp_path / "synth_val.bin")]
  # The .rec directory the data came from comes before the default val_dir.
  rec = tmp_path / "rec"
  rec.mkdir()
  (rec / "synth_val.bin").write_bytes(b"")
  manifest = schema.Manifest(1, 1, [112, 112], 0, [], source={"rec_dir": str(rec)})
  assert datasets.resolve_val_bins(config, manifest) == [str(rec / "synth_val.bin")]
  config.val_bins = f"{tmp_path}/synth_val.bin,{tmp_path}/lfw.bin"
  with pytest.raises(FileNotFoundError, match="lfw.bin"):
    datasets.resolve_val_bins(config)


@pytest.mark.parametrize("field, value, what", [
    ("epochs", 0.0, "> 0"), ("epochs", -1.0, "> 0"), ("head.s", -5.0, "> 0"),
    ("lr", 0.0, "> 0"), ("base_lr", 0.0, "> 0"), ("momentum", 1.0, r"in \[0, 1\)"),
    ("weight_decay", -1e-4, ">= 0"), ("clip_norm", 0.0, "> 0"),
    ("keep_checkpoints", 0, ">= 1"), ("backbone.embedding_size", 0, ">= 1"),
    ("backbone.dropout", 1.0, r"in \[0, 1\)"), ("head.margin_warmup", 1.0, r"in \[0, 1\)"),
    ("triplet.images_per_identity", 1, ">= 2"), ("schedule.decay_factor", 0.0, r"in \(0, 1\]"),
    ("schedule.decay_at", (2.0,), "increasing fractions"),
    ("schedule.decay_at", (0.9, 0.5), "increasing fractions"),
    ("schedule.warmup_fraction", -0.1, r"in \[0, 1\)")])
def test_values_no_run_can_use_are_refused(field, value, what):
  """They used to train anyway: --config.epochs=0 trained one step, head.s=-5 flipped the logits."""
  with pytest.raises(ValueError, match=rf"^--config\.{re.escape(field)}: must be {what}.*; "
                     rf"got {re.escape(repr(value))}$"):
    config_lib.apply_shortcuts(_load("synthetic"), {field: value})
  # The boundary values that are fine still pass.
  config_lib.apply_shortcuts(_load("synthetic"), {"momentum": 0.0, "weight_decay": 0.0,
                                                  "head.margin_warmup": 0.0})
