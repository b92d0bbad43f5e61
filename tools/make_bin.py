"""Builds an InsightFace verification `.bin` from a pairs file and aligned face images.

  python tools/make_bin.py --pairs=pairs.txt --image_root=DIR --output=lfw.bin [--resize]

The pairs file is LFW's `pairs.txt` (`name n1 n2` / `name1 n1 name2 n2`) or
lines of `path1 path2 1|0` relative to DIR (1 = same person). It must hold at
least 10 pairs: InsightFace's protocol (tools/verify.py) splits them into 10
folds.
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_PAIRS = flags.DEFINE_string("pairs", None, "Pairs file (LFW pairs.txt or 'p1 p2 0|1' lines).")
_IMAGE_ROOT = flags.DEFINE_string("image_root", None, "Directory the image paths are under.")
_OUTPUT = flags.DEFINE_string("output", None, "The .bin file to write.")
_RESIZE = flags.DEFINE_bool("resize", False,
                            "Resize images that are not 112x112 (else they are an error).")
flags.mark_flags_as_required(["pairs", "image_root", "output"])


def main(argv):
  del argv  # unused
  # After absl parsed the flags: fast --help.
  from tfface import atomic  # pylint: disable=g-import-not-at-top
  from tfface.data.insightface import pairs  # pylint: disable=g-import-not-at-top
  from tfface.evaluation import protocol  # pylint: disable=g-import-not-at-top
  atomic.check_output_file(_OUTPUT.value, "--output")
  vbin = pairs.build_bin(_PAIRS.value, _IMAGE_ROOT.value, _OUTPUT.value, resize=_RESIZE.value,
                         progress=True, min_pairs=protocol.NROF_FOLDS)
  print(f"wrote {_OUTPUT.value}: {vbin.num_pairs} pairs ({int(vbin.issame.sum())} same)")


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
