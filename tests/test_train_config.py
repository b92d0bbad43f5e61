"""Configs, shortcut flags, learning-rate scaling and schedules."""
import glob
import os

import pytest

from conftest import REPO
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

  # The fourth seed command: triplet fine-tuning of the softmax model.
  config = config_lib.apply_shortcuts(_load("synthetic"), network="m1", loss="triplet",
                                      lr=0.005, pretrained="./models/m1-softmax-emore")
  assert config.backbone.overrides.to_dict() == {}  # the tiny-r18 overrides went
  assert config.pretrained == "./models/m1-softmax-emore"
  assert config.triplet.images_per_identity == 5


def test_loss_change_resets_tuned_margins_and_overrides_win():
  config = _load("synthetic")
  config.head.m2 = 0.2
  config = config_lib.apply_shortcuts(config, loss="cosface")
  assert config.head.m2 is None
  config = config_lib.apply_shortcuts(_load("synthetic"), {"head.s": 16.0, "base_lr": 0.2},
                                      dataset="emore")
  assert config.head.s == 16.0 and config.base_lr == 0.2  # --config.* beat --dataset
  assert config.data_dir == "datasets/faces_emore/tfrecords"


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
