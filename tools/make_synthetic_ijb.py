"""Writes a synthetic set in InsightFace's IJB layout (loose crops + meta files).

  python tools/make_synthetic_ijb.py --output_dir=DIR [--target=IJBC]
      [--num_identities=40] [--templates_per_identity=3] [--seed=0] [--overwrite]

The default (40 identities, 120 templates, about 350 images, 3,200 template
pairs) is what the tests use; a demo size with enough impostor pairs for
FAR = 1e-6 is `--num_identities=1000` (9,001 images, 3,000 templates,
2,000,000 pairs, about 45 s). Identities are not those of
tools/make_synthetic.py's training set. Evaluate with tools/eval_ijb.py.
The set appears under DIR once complete; an existing non-empty DIR is
refused unless --overwrite (which replaces it whole).
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to write the set into.")
_TARGET = flags.DEFINE_enum("target", "IJBC", ["IJBC", "IJBB"], "Prefix of the meta files.")
_NUM_IDENTITIES = flags.DEFINE_integer("num_identities", 40, "People.", lower_bound=2)
_TEMPLATES = flags.DEFINE_integer("templates_per_identity", 3,
                                  "Templates per person: one gallery, the rest probes.",
                                  lower_bound=2)
_MAX_MEDIA = flags.DEFINE_integer("max_media_per_template", 3,
                                  "Each template holds 1..this many media.",
                                  lower_bound=1)
_MAX_FRAMES = flags.DEFINE_integer("max_frames_per_media", 2,
                                   "Each media holds 1..this many frames (images).",
                                   lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed; the output is a function of it.",
                             lower_bound=0)
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace an existing non-empty --output_dir (whole, once the "
                               "new set is complete).")
flags.mark_flags_as_required(["output_dir"])


def main(argv):
  del argv  # unused
  from tfface import progress  # pylint: disable=g-import-not-at-top
  from tfface.data.synthetic import ijb  # pylint: disable=g-import-not-at-top
  bars = []

  def _update(done, total):  # the total is known once the layout is drawn
    if not bars:
      bars.append(progress.progress(total=total, desc="synthetic IJB", unit="images"))
    bars[0].update(done - bars[0].n)

  try:
    summary = ijb.generate_ijb(
        _OUTPUT_DIR.value, target=_TARGET.value, num_identities=_NUM_IDENTITIES.value,
        templates_per_identity=_TEMPLATES.value, max_media_per_template=_MAX_MEDIA.value,
        max_frames_per_media=_MAX_FRAMES.value, seed=_SEED.value, progress=_update,
        overwrite=_OVERWRITE.value)
  finally:
    for bar in bars:
      bar.close()
  print(summary)


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
