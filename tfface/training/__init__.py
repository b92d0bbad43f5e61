"""Training: configs, the input of a run, the loop, checkpoints, schedules, summaries.

`tfface.training.train(config, workdir)` (from `trainer`) is the entry point
that `tools/train.py` calls. It is imported lazily so that loading a config
file (`configs/*.py` import `tfface.training.config`) does not import
TensorFlow.
"""


def __getattr__(name):
  if name == "train":
    from tfface.training.trainer import train  # pylint: disable=g-import-not-at-top
    return train
  raise AttributeError(f"module 'tfface.training' has no attribute {name!r}")
