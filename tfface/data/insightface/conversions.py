"""Conversions between a `.rec` dataset and a folder of images (`rec2img`, `img2rec`).

`rec_to_images` writes each record's bytes unchanged (so colours stay right:
the JPEGs were encoded from BGR arrays by OpenCV and any decoder reads them
as the faces they are). `images_to_rec` reads one sub-folder per identity,
writes InsightFace's `train.lst` (`1<TAB>path<TAB>label`, the dir2lst form)
and the `.rec` in the layout InsightFace's MXNet loaders expect.
"""
import dataclasses
import os

import cv2
import numpy as np

from tfface import atomic
from tfface import progress as progress_lib
from tfface.data.insightface import rec as insightface_rec
from tfface.data.insightface import rec_writer

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_EXTENSION_BY_SIGNATURE = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"BM", ".bmp"),
                           (b"GIF8", ".gif"))


def image_extension(data: bytes) -> str:
  """File extension for encoded image bytes (`.jpg` when unknown)."""
  for signature, extension in _EXTENSION_BY_SIGNATURE:
    if data.startswith(signature):
      return extension
  return ".jpg"


def rec_to_images(rec_dir, output_dir: str, progress: bool = False,
                  overwrite: bool = False) -> int:
  """Writes every image of a `.rec` dataset to `output_dir/<label>/<key>.jpg`.

  The tree is written into a temporary directory beside `output_dir` and
  renamed to it once every image is written: a failure leaves nothing.

  Args:
    rec_dir: a directory with `train.rec`/`train.idx`, or `(rec, idx)` paths.
    output_dir: destination root (created; its parent too).
    progress: show images written, rate and ETA on stderr.
    overwrite: replace an existing non-empty `output_dir` (whole, once the
      new tree is complete) instead of refusing it.

  Returns:
    The number of images written.

  Raises:
    ValueError: a non-empty `output_dir` without `overwrite`, or bad input:
      a broken record, or an `.idx` that does not match the `.rec` (named
      by file and line, key or byte offset).
  """
  count = 0
  with insightface_rec.InsightFaceRec(rec_dir) as rec, \
       atomic.replacing_dir(output_dir, overwrite=overwrite) as tmp:
    for key, label, image in progress_lib.progress(rec, total=rec.num_images, desc="rec2img",
                                                   unit="images", disable=not progress):
      folder = os.path.join(tmp, str(label))
      os.makedirs(folder, exist_ok=True)
      atomic.write_bytes(os.path.join(folder, f"{key}{image_extension(image)}"), image)
      count += 1
  return count


def list_image_folder(image_dir: str) -> list[tuple[str, int]]:
  """`(path, label)` for every image, identities numbered in sorted folder order.

  Raises:
    ValueError: no identity folders or no images.
  """
  if not os.path.isdir(image_dir):
    raise ValueError(f"{image_dir}: not a directory")
  people = sorted(d for d in os.listdir(image_dir)
                  if os.path.isdir(os.path.join(image_dir, d)))
  items = []
  for label, person in enumerate(people):
    folder = os.path.join(image_dir, person)
    for name in sorted(os.listdir(folder)):
      if name.lower().endswith(IMAGE_EXTENSIONS):
        items.append((os.path.join(folder, name), label))
  if not items:
    raise ValueError(f"{image_dir}: no images found (expected one sub-folder per identity "
                     f"holding {'/'.join(IMAGE_EXTENSIONS)} files)")
  return items


def write_lst(path: str, items: list[tuple[str, int]]):
  """Writes InsightFace's dir2lst form: `1<TAB>path<TAB>label` (1 = aligned)."""
  atomic.write_text(path, "".join(f"1\t{image_path}\t{label}\n"
                                  for image_path, label in items))


def load_face_image(path: str, size=(112, 112), resize: bool = False,
                    quality: int = 95) -> bytes:
  """The bytes to store for one image: unchanged if it is `size`, else resized.

  Raises:
    ValueError: the file is not a readable image, or has another size and
      `resize` is False.
  """
  with open(path, "rb") as f:
    data = f.read()
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError(f"{path}: not a readable image ({len(data)} bytes)")
  height, width = size
  if image.shape[:2] == (height, width):
    return data
  if not resize:
    raise ValueError(f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected "
                     f"{width}x{height} aligned faces (pass --resize to resize)")
  image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
  ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise ValueError(f"{path}: could not re-encode the resized image")
  return buf.tobytes()


@dataclasses.dataclass
class Img2RecResult:
  num_images: int
  num_classes: int
  output_dir: str


def images_to_rec(image_dir: str, output_dir: str, resize: bool = False,
                  size=(112, 112), progress: bool = False,
                  overwrite: bool = False) -> Img2RecResult:
  """Packs `image_dir/<identity>/*.jpg` into `train.lst/.rec/.idx` + `property`.

  The four files are written into a temporary directory beside `output_dir`
  and moved into it once all are complete: a failure leaves nothing.

  Args:
    image_dir: root with one sub-folder per identity (labels in sorted order).
    output_dir: destination directory (created; its parent too).
    resize: resize images of another size to `size` (else an error).
    size: `(height, width)` of the faces.
    progress: show images packed, rate and ETA on stderr.
    overwrite: write into a non-empty `output_dir` instead of refusing it:
      the four files replace theirs, other files there stay.

  Returns:
    An `Img2RecResult`.

  Raises:
    ValueError: an unreadable image (named), a wrongly sized one, or a
      non-empty `output_dir` without `overwrite`.
  """
  items = list_image_folder(image_dir)
  with atomic.replacing_dir(output_dir, overwrite=overwrite, merge=True) as tmp:
    with rec_writer.InsightFaceWriter(tmp, image_size=size) as writer:
      for path, label in progress_lib.progress(items, desc="img2rec", unit="images",
                                               disable=not progress):
        writer.add(label, load_face_image(path, size, resize))
    write_lst(os.path.join(tmp, "train.lst"), items)
  return Img2RecResult(writer.num_images, writer.num_classes, output_dir)
