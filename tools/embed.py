"""Embeds face images with a trained model (InsightFace's face_embedding.py).

  python tools/embed.py --model=EXPORT_OR_WORKDIR --input=faces/ --output=emb.npy [--align]

Writes OUTPUT (float32 [n, D], one L2-normalized embedding per image) and
OUTPUT_STEM.files.txt (one input file per row, same order). The embedding is
the form the model's threshold belongs to: what an export serves
(single-view, or image plus mirror with flip TTA), the flip-summed
verification form for a workdir or .keras file. Inputs are aligned 112x112
crops, or raw photos with --align (needs mtcnn).
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_MODEL = flags.DEFINE_string("model", None, "SavedModel export, training workdir or .keras file.")
_INPUT = flags.DEFINE_string("input", None, "An image file or a directory of images.")
_OUTPUT = flags.DEFINE_string("output", None, "The .npy file to write.")
_ALIGN = flags.DEFINE_boolean("align", False, "Detect and align faces with MTCNN first.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per forward pass.", lower_bound=1)
flags.mark_flags_as_required(["model", "input", "output"])


def main(argv):
  del argv  # unused
  from tfface.serving import image_files  # pylint: disable=g-import-not-at-top
  report = image_files.embed_files(_MODEL.value, _INPUT.value, _OUTPUT.value,
                                 align=_ALIGN.value, batch_size=_BATCH_SIZE.value)
  print(f"embedded {len(report.files)} images ({report.embedding}) -> {report.output} "
        f"(files listed in {report.files_list})")
  if report.no_face:
    print(f"no face found (skipped): {', '.join(report.no_face)}")


def run():
  _cli.run(main)


if __name__ == "__main__":
  run()
