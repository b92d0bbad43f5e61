"""Embedding image files and comparing two faces: `tools/embed.py`, `tools/compare.py`.

Both compute the embedding form the model's decision threshold belongs to
(`EmbeddingModel.threshold_embedding`): for an export, the form its
`serving_default` serves (single-view, or flip-summed with flip TTA); for a
training workdir or `.keras` file, the flip-summed verification form. Two
faces are the same person when the squared distance between their
normalized embeddings (2 - 2 * cosine) is below that threshold.
"""
import dataclasses
import io
import os

import numpy as np

from tfface import atomic
from tfface.align import detector
from tfface.align import folder
from tfface.data.insightface import verification_bin
from tfface.inference import decode
from tfface.inference import loading


def _read_face(path, image_size, aligner):
  """An RGB face of the model's input size from an image file.

  Without an aligner the file must already be an aligned crop; other sizes
  are resized like the verification loader. With an aligner the largest face
  is detected and warped; None is returned when there is no face.
  """
  if aligner is None:
    with open(path, "rb") as f:
      return decode.decode_image(f.read(), image_size, path)[0]
  image = folder.read_rgb(path)
  aligned = aligner.align(image)
  if aligned.image is None:
    return None
  if aligned.image.shape[:2] != tuple(image_size):
    raise ValueError(f"{path}: aligned to {aligned.image.shape[:2]}, but the model "
                     f"expects {tuple(image_size)}")
  return aligned.image


def _aligner(align, image_size):
  if not align:
    return None
  if image_size[0] != image_size[1]:
    raise ValueError(f"--align makes square crops; the model expects {image_size}")
  return detector.FaceAligner(image_size[0])


@dataclasses.dataclass
class EmbedReport:
  """Files embedded (row order of the output), files skipped without a face, the form."""

  files: list
  no_face: list
  output: str
  files_list: str
  embedding: str


def files_list_path(output):
  """The text file beside `output` listing one embedded file per row."""
  return os.path.splitext(output)[0] + ".files.txt"


def embed_files(model_path, input_path, output, align=False, batch_size=64, verbose=True):
  """Embeds an image file or every image under a directory.

  Args:
    model_path: SavedModel export, training workdir or `.keras` file.
    input_path: an image file, or a directory searched recursively.
    output: `.npy` file for the float32 [n, D] unit-norm embeddings (the
      model's `threshold_embedding` form); the embedded files (relative to a
      directory input) go to `files_list_path`.
    align: detect and align faces with MTCNN first (for raw photos).
    batch_size: images per forward pass.
    verbose: show embedding progress on stderr.

  Returns:
    An `EmbedReport`.

  Raises:
    ValueError: no images, an unreadable image, nothing left to embed, or an
      output that cannot be written (checked before anything is embedded).
    OSError: `input_path` does not exist.
  """
  listing = files_list_path(output)
  atomic.check_output_file(output, "--output")
  if os.path.isdir(listing):
    raise ValueError(f"--output={output}: its file list {listing} is a directory")
  if os.path.isdir(input_path):
    rel_paths = folder.list_images(input_path)
    full = [os.path.join(input_path, p) for p in rel_paths]
  elif os.path.isfile(input_path):
    rel_paths, full = [os.path.basename(input_path)], [input_path]
  else:
    raise OSError(f"{input_path}: no such file or directory")
  if not full:
    raise ValueError(f"{input_path}: no image files ({', '.join(folder.IMAGE_EXTENSIONS)})")
  model = loading.load_embedding_model(model_path)
  aligner = _aligner(align, model.image_size)
  faces, kept, no_face = [], [], []
  for rel, path in zip(rel_paths, full):
    face = _read_face(path, model.image_size, aligner)
    if face is None:
      no_face.append(rel)
    else:
      faces.append(face)
      kept.append(rel)
  if not faces:
    raise ValueError(f"{input_path}: no face found in any of {len(full)} images")
  embeddings = model.embed(np.stack(faces), batch_size=batch_size, verbose=verbose)
  buffer = io.BytesIO()
  np.save(buffer, embeddings)
  # Both under temporary names, then the embeddings renamed, then the listing:
  # a failure before the listing's rename (which follows a rename in the same
  # directory) leaves neither file behind.
  with atomic.replacing(listing, make_dirs=True) as listing_tmp, \
      atomic.replacing(output) as output_tmp:
    with open(listing_tmp, "w", encoding="utf-8") as f:
      f.write("".join(p + "\n" for p in kept))
    with open(output_tmp, "wb") as f:
      f.write(buffer.getbuffer())
  return EmbedReport(kept, no_face, output, listing, model.threshold_embedding)


@dataclasses.dataclass
class Comparison:
  """The outcome of comparing two faces."""

  cosine: float
  distance: float
  threshold: float
  threshold_source: str
  embedding: str
  truth: bool = None  # the label, when the pair comes from a .bin

  @property
  def same(self):
    return self.distance < self.threshold

  def describe(self):
    """The lines `tools/compare.py` prints."""
    verdict = "same person" if self.same else "different people"
    text = (f"embedding:         {self.embedding}\n"
            f"cosine similarity: {self.cosine:.4f}\n"
            f"squared distance:  {self.distance:.4f}\n"
            f"threshold:         {self.threshold:.4f} ({self.threshold_source})\n"
            f"verdict:           {verdict}")
    if self.truth is not None:
      text += f"\nground truth:      {'same person' if self.truth else 'different people'}"
    return text


def _threshold_source(model):
  """Where the model's threshold comes from, for the printout."""
  if model.metadata.get("threshold") is None:
    return f"default {loading.DEFAULT_THRESHOLD}, no threshold stored with the model"
  target = model.metadata.get("threshold_target")
  return f"verification on {target}" if target else "stored with the model"


def _compare_faces(model, faces, threshold):
  a, b = model.embed(np.stack(faces), verbose=False).astype(np.float64)
  source = "given" if threshold is not None else _threshold_source(model)
  value = float(threshold) if threshold is not None else model.threshold
  return Comparison(float(np.dot(a, b)), float(np.sum((a - b) ** 2)), value, source,
                    model.threshold_embedding)


def compare_images(model_path, image1=None, image2=None, align=False, threshold=None,
                   bin_path=None, pair=None):
  """Compares the faces in two image files, or pair `pair` of a `.bin`.

  The embeddings are of the form the model's threshold belongs to (for an
  export, the form it serves); a given `threshold` is taken to be for it too.

  Args:
    model_path: SavedModel export, training workdir or `.keras` file.
    image1: first image file (unless `bin_path`).
    image2: second image file (unless `bin_path`).
    align: detect and align faces with MTCNN first.
    threshold: squared-distance threshold; default: stored with the model.
    bin_path: a verification `.bin` to take the two images from instead.
    pair: index of the pair in `bin_path` (negative counts from the end).

  Returns:
    A `Comparison` (with `truth` set for a `.bin` pair).

  Raises:
    ValueError: an image cannot be read or (with `align`) has no face, or
      the pair index is out of range.
    OSError: an image file does not exist.
  """
  if bin_path is not None:
    vbin = verification_bin.load_bin(bin_path)
    if pair is None or not -vbin.num_pairs <= pair < vbin.num_pairs:
      raise ValueError(f"{bin_path}: pair {pair} out of range; the file has "
                       f"{vbin.num_pairs} pairs")
    index = pair % vbin.num_pairs
    model = loading.load_embedding_model(model_path)
    faces = [decode.decode_image(vbin.images[2 * index + k], model.image_size,
                                 f"{bin_path}: image {2 * index + k}")[0]
             for k in (0, 1)]
    result = _compare_faces(model, faces, threshold)
    result.truth = bool(vbin.issame[index])
    return result
  if image1 is None or image2 is None:
    raise ValueError("give two image files, or a .bin and a pair index")
  for path in (image1, image2):
    if not os.path.isfile(path):
      raise OSError(f"{path}: no such file")
  model = loading.load_embedding_model(model_path)
  aligner = _aligner(align, model.image_size)
  faces = []
  for path in (image1, image2):
    face = _read_face(path, model.image_size, aligner)
    if face is None:
      raise ValueError(f"{path}: no face found")
    faces.append(face)
  return _compare_faces(model, faces, threshold)
