"""Packs a folder of aligned faces (one sub-folder per identity) into a `.rec` dataset.

  python tools/img2rec.py --image_dir=ROOT --output_dir=OUT [--resize] [--overwrite]

OUT gets `train.lst` (`1<TAB>path<TAB>label`), `train.rec`, `train.idx` and
`property`, in the layout InsightFace's MXNet loaders read (header record,
images, identity records). Labels follow the sorted sub-folder names. The
four files are written beside OUT under a temporary name and moved into OUT
when all are complete: a failure leaves nothing. An existing non-empty OUT is
refused unless --overwrite (which replaces those four files and keeps the rest).
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
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Write into a non-empty output directory: train.lst/.rec/.idx and "
                               "property replace theirs (once all are complete); other files "
                               "stay.")
flags.mark_flags_as_required(["image_dir", "output_dir"])


def main(argv):
  del argv  # unused
  from tfface.data.insightface import conversions  # after absl parsed the flags: fast --help
  result = conversions.images_to_rec(_IMAGE_DIR.value, _OUTPUT_DIR.value, resize=_RESIZE.value,
                                     progress=True, overwrite=_OVERWRITE.value)
  print(f"wrote {result.num_images} images of {result.num_classes} identities to "
        f"{result.output_dir}")


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
