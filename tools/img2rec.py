"""Packs a folder of aligned faces (one sub-folder per identity) into a `.rec` dataset.

  python tools/img2rec.py --image_dir=ROOT --output_dir=OUT [--resize]

OUT gets `train.lst` (`1<TAB>path<TAB>label`), `train.rec`, `train.idx` and
`property`, in the layout InsightFace's MXNet loaders read (header record,
images, identity records). Labels follow the sorted sub-folder names.
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Root with one sub-folder per identity.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for the .rec dataset.")
_RESIZE = flags.DEFINE_bool("resize", False,
                            "Resize images that are not 112x112 (else they are an error).")
flags.mark_flags_as_required(["image_dir", "output_dir"])


def main(argv):
  del argv  # unused
  from tfface.data.insightface import conversions  # after absl parsed the flags: fast --help
  result = conversions.images_to_rec(_IMAGE_DIR.value, _OUTPUT_DIR.value, resize=_RESIZE.value,
                                          progress=True)
  print(f"wrote {result.num_images} images of {result.num_classes} identities to "
        f"{result.output_dir}")


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
