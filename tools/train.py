"""Trains a face-recognition model (InsightFace's train.py, on tfface TFRecords).

  python tools/train.py --network r100 --loss arcface --dataset emore
  python tools/train.py --network r50 --loss cosface --dataset emore
  python tools/train.py --network m1 --loss softmax --dataset emore
  python tools/train.py --network m1 --loss triplet --lr 0.005 \
      --pretrained ./models/m1-softmax-emore
  python tools/train.py --dataset synthetic --data_dir=TFRECORDS \
      --val_bins=DIR/synth_val.bin --workdir=W --total_steps=N

`--config=configs/NAME.py` picks a config file, a whole recipe (default:
configs/DATASET.py for `--dataset DATASET`, else configs/emore.py, as emore was
InsightFace's default dataset); `--config.FIELD=VALUE` overrides any field and
wins over the shortcut flags, which may not contradict the config file. Rerunning the same
command resumes from the last checkpoint in the workdir. See
docs/training.md.
"""
import os
import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli


def _config_dir() -> str:
  """`configs/` beside `tools/` in a checkout, else the installed `tfface_configs`."""
  beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")
  if os.path.isfile(os.path.join(beside, "emore.py")):
    return os.path.normpath(beside)
  import tfface_configs  # pylint: disable=g-import-not-at-top
  return os.path.dirname(os.path.abspath(tfface_configs.__file__))


_CONFIGS = _config_dir()


def _check_config_overrides(argv):
  """One error line for a `--config.FIELD` that names no field, before absl parses.

  ml_collections parses the overrides while the flag is defined (at import)
  and would end with a raw AttributeError traceback. Every config file
  derives from `base_config()`, so its fields are the ones to check.
  """
  from tfface.training import config as config_lib  # pylint: disable=g-import-not-at-top
  base = config_lib.base_config()
  for arg in argv[1:]:
    if arg == "--":
      break
    if arg.startswith("--config."):
      try:
        config_lib.check_field(base, arg[len("--config."):].split("=", 1)[0])
      except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


# Before DEFINE_config_file, which parses `--config.*` from sys.argv at once.
_check_config_overrides(sys.argv)
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_CONFIGS, "emore.py"),
    "Config file (configs/NAME.py); default configs/DATASET.py for --dataset DATASET, "
    "else configs/emore.py.", lock_config=True)
_NETWORK = flags.DEFINE_enum(
    "network", None, ["r18", "r34", "r50", "r100", "r200", "mbf", "y1", "m1"],
    "Backbone (clears the config's backbone overrides).")
_LOSS = flags.DEFINE_enum("loss", None, ["arcface", "cosface", "combined", "softmax",
                                         "triplet"], "Loss / head recipe.")
_DATASET = flags.DEFINE_enum(
    "dataset", None, ["emore", "glint360k", "webface42m", "custom", "synthetic"],
    "Named dataset: its location and verification targets; without --config, also its "
    "recipe (configs/DATASET.py).")
_PRETRAINED = flags.DEFINE_string(
    "pretrained", None, "Backbone to start from: a workdir, a checkpoint (directory or "
    "prefix) or a .keras file. A new head is built for the data's identities.")
_LR = flags.DEFINE_float("lr", None, "Absolute peak learning rate (as InsightFace's "
                         "--lr); default: the config's base_lr x global batch / reference_batch.",
                         lower_bound=0.0)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; default "
                               "models/NETWORK-LOSS-DATASET.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFRecord directory with manifest.json.")
_VAL_BINS = flags.DEFINE_string("val_bins", None, "Comma-separated verification .bin files.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Images per replica per step.",
                                   lower_bound=1)
_TOTAL_STEPS = flags.DEFINE_integer("total_steps", None, "Optimizer steps of the run.",
                                    lower_bound=1)
_CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", None,
                                         "Steps between checkpoints.", lower_bound=1)
_VERIFY_EVERY = flags.DEFINE_integer("verify_every", None,
                                     "Steps between verifications.", lower_bound=1)
_STRATEGY = flags.DEFINE_enum("strategy", None, ["auto", "one_device", "mirrored",
                                                 "multi_worker"], "Distribution strategy.")
_CPU_REPLICAS = flags.DEFINE_integer(
    "cpu_replicas", None, "Split the CPU into N logical devices (MirroredStrategy "
    "without GPUs).", lower_bound=0)
_MIXED_PRECISION = flags.DEFINE_enum(
    "mixed_precision", None, ["float32", "mixed_float16", "mixed_bfloat16"],
    "Compute policy of the backbone: mixed_float16 (GPUs; with a loss-scale optimizer), "
    "mixed_bfloat16 (TPUs, Ampere GPUs, CPUs with AVX512-BF16) or float32. The head and "
    "the loss stay float32.")


def main(argv):
  del argv  # unused
  from tfface.training import trainer  # after absl parsed the flags: fast --help
  # TensorFlow logs an INFO line per checkpoint shard; progress lines suffice.
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  # The config file is passed by name and the --config.* overrides applied
  # once, by the trainer, after the shortcuts: `_CONFIG.value` already holds
  # the overrides, which would hide what the file itself set (another
  # --config.network must drop the file's backbone overrides).
  config = config_flags.get_config_filename(flags.FLAGS["config"])
  if _DATASET.value and not flags.FLAGS["config"].present:
    config = os.path.join(_CONFIGS, f"{_DATASET.value}.py")  # the dataset's own recipe
  trainer.train(
      config, _WORKDIR.value, overrides=config_flags.get_override_values(flags.FLAGS["config"]),
      network=_NETWORK.value,
      loss=_LOSS.value, dataset=_DATASET.value, pretrained=_PRETRAINED.value,
      lr=_LR.value, data_dir=_DATA_DIR.value, val_bins=_VAL_BINS.value,
      batch_size=_BATCH_SIZE.value, total_steps=_TOTAL_STEPS.value,
      checkpoint_every=_CHECKPOINT_EVERY.value, verify_every=_VERIFY_EVERY.value,
      strategy=_STRATEGY.value, cpu_replicas=_CPU_REPLICAS.value,
      mixed_precision=(None if _MIXED_PRECISION.value is None else
                       "" if _MIXED_PRECISION.value == "float32" else _MIXED_PRECISION.value))


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
