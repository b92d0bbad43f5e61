"""Aligning a folder-per-identity tree of raw photos into 112x112 crops.

`RAW/alice/1.jpg` becomes `ALIGNED/alice/1.jpg`, so the result can be packed
by `tools/img2rec.py` directly. Photos without a face are skipped; photos with
several faces keep the largest, or are skipped in strict mode. Every skipped
or ambiguous photo is listed in the returned report.
"""
import dataclasses
import os

import cv2

from tfface import atomic
from tfface.align import detector as detector_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(root):
  """Image files under `root`, recursively, as sorted relative paths."""
  found = []
  for directory, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      if name.lower().endswith(IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(directory, name), root))
  return found


def read_rgb(path):
  """Reads an image file as RGB uint8 [H, W, 3].

  Raises:
    ValueError: the file is not a decodable image.
  """
  bgr = cv2.imread(path, cv2.IMREAD_COLOR)
  if bgr is None:
    raise ValueError(f"{path}: cannot read as an image")
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_rgb(path, image_rgb):
  """Writes an RGB image (JPEG at quality 95, as InsightFace packs) atomically."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  ext = os.path.splitext(path)[1].lower()
  ok, data = cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, 95])
  if not ok:
    raise OSError(f"{path}: cannot encode the aligned image")
  atomic.write_bytes(path, data.tobytes())


@dataclasses.dataclass
class AlignReport:
  """What `align_folder` did; paths are relative to the input directory."""

  written: list = dataclasses.field(default_factory=list)
  no_face: list = dataclasses.field(default_factory=list)
  several_faces: list = dataclasses.field(default_factory=list)
  skipped_several: list = dataclasses.field(default_factory=list)
  unreadable: list = dataclasses.field(default_factory=list)

  def summary(self):
    """One line per category, for the tool to print."""
    lines = [f"aligned {len(self.written)} images"]
    for label, items in (("no face (skipped)", self.no_face),
                         ("several faces (largest kept)",
                          [p for p in self.several_faces if p not in self.skipped_several]),
                         ("several faces (skipped, --strict)", self.skipped_several),
                         ("unreadable (skipped)", self.unreadable)):
      if items:
        lines.append(f"{label}: {len(items)}: " + ", ".join(items))
    return "\n".join(lines)


def align_folder(input_dir, output_dir, strict=False, image_size=112, aligner=None,
                 echo=None):
  """Aligns every photo under `input_dir` into `output_dir`, keeping the tree.

  Args:
    input_dir: root of `IDENTITY/IMAGE` folders (any depth is kept).
    output_dir: where the aligned crops go (same relative paths).
    strict: skip photos with more than one face instead of keeping the largest.
    image_size: side of the aligned crops.
    aligner: a `FaceAligner`; defaults to MTCNN.
    echo: optional callable for one progress line per 100 images.

  Returns:
    An `AlignReport`.

  Raises:
    OSError: `input_dir` does not exist or `output_dir` is inside it.
  """
  if not os.path.isdir(input_dir):
    raise OSError(f"{input_dir}: not a directory")
  if os.path.abspath(output_dir).startswith(os.path.abspath(input_dir) + os.sep):
    raise OSError(f"{output_dir}: the output must not be inside the input {input_dir}")
  aligner = aligner or detector_lib.FaceAligner(image_size)
  report = AlignReport()
  paths = list_images(input_dir)
  for i, rel in enumerate(paths):
    try:
      image = read_rgb(os.path.join(input_dir, rel))
    except ValueError:
      report.unreadable.append(rel)
      continue
    result = aligner.align(image)
    if result.image is None:
      report.no_face.append(rel)
      continue
    if len(result.faces) > 1:
      report.several_faces.append(rel)
      if strict:
        report.skipped_several.append(rel)
        continue
    write_rgb(os.path.join(output_dir, rel), result.image)
    report.written.append(rel)
    if echo and (i + 1) % 100 == 0:
      echo(f"{i + 1}/{len(paths)} images")
  return report
