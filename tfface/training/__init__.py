"""Training: configs, the input of a run, the loop, checkpoints, schedules, summaries.

`tfface.training.train(config, workdir)` (from `trainer`) is the library's
entry point to a run. It is imported lazily: config files import
`tfface.training.config`, which should not pull in the trainer and its
input, checkpoint and summary modules. (TensorFlow itself is loaded by
`import tfface`, which registers the Keras layers.)
"""


def __getattr__(name):
  if name == "train":
    from tfface.training.trainer import train  # pylint: disable=g-import-not-at-top
    return train
  raise AttributeError(f"module 'tfface.training' has no attribute {name!r}")
