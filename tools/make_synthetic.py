"""Writes the embedded synthetic face dataset (InsightFace layout + synth_val.bin).

  python tools/make_synthetic.py --output_dir=DIR [--num_identities=N]
      [--images_per_identity=M] [--num_pairs=P] [--seed=S] [--overwrite]

DIR gets `train.rec`, `train.idx`, `property` and `synth_val.bin`, whose
pairs come from identities that are not in the training set. The four files
appear together once all are written. An existing non-empty DIR is refused
unless --overwrite (which replaces those four files and keeps the rest).
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to write the dataset into.")
_NUM_IDENTITIES = flags.DEFINE_integer("num_identities", 300, "Training identities.",
                                      lower_bound=1)
_IMAGES_PER_IDENTITY = flags.DEFINE_integer("images_per_identity", 30,
                                            "Training images per identity.", lower_bound=1)
_NUM_PAIRS = flags.DEFINE_integer("num_pairs", 1200,
                                  "Verification pairs (a multiple of 20: 10 folds, half same).",
                                  lower_bound=20)
_NUM_VAL_IDENTITIES = flags.DEFINE_integer("num_val_identities", 100,
                                           "Identities (not in training) used by the pairs.",
                                           lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the output is a function of it.",
                             lower_bound=0)
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Write into a non-empty --output_dir, replacing the four files.")
flags.mark_flags_as_required(["output_dir"])


def main(argv):
  del argv  # unused
  from tfface.data.synthetic import dataset as synthetic  # after absl parsed the flags: fast --help
  summary = synthetic.generate(
      _OUTPUT_DIR.value, num_identities=_NUM_IDENTITIES.value,
      images_per_identity=_IMAGES_PER_IDENTITY.value, num_pairs=_NUM_PAIRS.value,
      seed=_SEED.value, num_val_identities=_NUM_VAL_IDENTITIES.value, progress=True,
      overwrite=_OVERWRITE.value)
  print(summary)


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
