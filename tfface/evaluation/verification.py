"""Embedding a verification `.bin` the way InsightFace's `verification.py` does.

Each image is decoded to RGB (InsightFace uses `mx.image.imdecode`, which
returns RGB; tfface's one decode policy, `tfface.inference.decode`, gives the
same pixels), resized when its size differs from the model's input, embedded
as is and horizontally flipped with the raw (un-normalized) embedding, and the
two embeddings are summed and L2-normalized before `evaluate_embeddings`.

The single-view form (the image's own embedding, normalized) is evaluated
too, from the same forward passes: it is what an export without flip TTA
serves, and its threshold differs from the flip-summed one.

Decoding dominates the cost for small models, and the trainer verifies every
few thousand steps, so `decode_bin_images` is separate and its result can be
passed back to `verify(..., images=...)`.
"""
import dataclasses
import logging

import numpy as np

from tfface import progress as progress_lib
from tfface.data.insightface import verification_bin
from tfface.evaluation import protocol
from tfface.evaluation import roc
from tfface.inference import decode
from tfface.inference import embedding as embedding_lib
from tfface.inference import loading

_LOG = logging.getLogger(__name__)


def decode_bin_images(vbin, image_size=loading.DEFAULT_IMAGE_SIZE, verbose=True):
  """Decodes every image of a `.bin` once, for repeated `verify` calls.

  Args:
    vbin: a `tfface.data.insightface.verification_bin.VerificationBin`.
    image_size: `(height, width)` of the model input.
    verbose: show progress on stderr.

  Returns:
    uint8 array [2N, height, width, 3], RGB.

  Raises:
    ValueError: an image cannot be decoded (the message names file and index).
  """
  image_size = tuple(int(v) for v in image_size)
  out = np.empty((len(vbin.images), *image_size, 3), dtype=np.uint8)
  resized = 0
  images = progress_lib.progress(vbin.images, desc=f"decode {vbin.name}", unit="images",
                                 disable=not verbose)
  with images:
    for i, data in enumerate(images):
      out[i], was_resized = decode.decode_image(data, image_size, f"{vbin.path}: image {i}")
      resized += was_resized
  if resized:
    _LOG.warning("%s: %d of %d images are not %dx%d; resized them as InsightFace "
                 "does (shorter side, bicubic)", vbin.path, resized,
                 len(vbin.images), image_size[0], image_size[1])
  return out


@dataclasses.dataclass
class OperatingPoint:
  """The decision threshold of one embedding form on one target, and its accuracy.

  Attributes:
    embedding: `single_view` or `flip_sum`.
    threshold: the grid threshold with the best accuracy on all pairs.
    threshold_accuracy: the accuracy of `threshold` on all pairs.
    accuracy_mean: InsightFace's 10-fold cross-validated accuracy.
    accuracy_std: its population std over the folds.
    distances: [N] squared distances of the pairs in this form.
  """

  embedding: str
  threshold: float
  threshold_accuracy: float
  accuracy_mean: float
  accuracy_std: float
  distances: np.ndarray

  @classmethod
  def measure(cls, unit_embeddings, issame, embedding, nrof_folds=protocol.NROF_FOLDS):
    """The operating point of normalized pair embeddings ([2N, D], pairs on consecutive rows)."""
    metrics = protocol.evaluate_accuracy(unit_embeddings, issame, nrof_folds)
    return cls(embedding, metrics["best_threshold"], metrics["best_threshold_accuracy"],
               metrics["accuracy_mean"], metrics["accuracy_std"], metrics["distances"])

  def as_dict(self):
    """JSON-ready summary (without the distances)."""
    return {"embedding": self.embedding, "threshold": self.threshold,
            "threshold_accuracy": self.threshold_accuracy,
            "accuracy_mean": self.accuracy_mean, "accuracy_std": self.accuracy_std}


@dataclasses.dataclass
class VerificationResult:
  """The numbers InsightFace prints for one target, plus what the ROC needs.

  `best_threshold` and `threshold_accuracy` are the flip-summed operating
  point; `single_view` is the single-view one (what an export without flip
  TTA serves).
  """

  name: str
  num_pairs: int
  accuracy_flip_mean: float
  accuracy_flip_std: float
  xnorm: float
  best_threshold: float
  threshold_accuracy: float
  val: float
  val_std: float
  far: float
  tar_far_1e3: float
  tar_far_1e4: float
  accuracies: np.ndarray
  best_thresholds: np.ndarray
  distances: np.ndarray
  issame: np.ndarray
  single_view: OperatingPoint

  def operating_point(self, embedding):
    """The `OperatingPoint` of `single_view` or `flip_sum` embeddings."""
    if embedding_lib.check_embedding(embedding) == embedding_lib.SINGLE_VIEW:
      return self.single_view
    return OperatingPoint(embedding_lib.FLIP_SUM, self.best_threshold,
                          self.threshold_accuracy, self.accuracy_flip_mean,
                          self.accuracy_flip_std, self.distances)

  def as_dict(self):
    """JSON-ready summary; `val_far_1e-3` is InsightFace's cross-validated VAL."""
    return {
        "num_pairs": self.num_pairs,
        "accuracy_flip_mean": self.accuracy_flip_mean,
        "accuracy_flip_std": self.accuracy_flip_std,
        "xnorm": self.xnorm,
        "best_threshold": self.best_threshold,
        "threshold_accuracy": self.threshold_accuracy,
        "val_far_1e-3": self.val,
        "val_std": self.val_std,
        "far": self.far,
        "tar_far_1e-3": self.tar_far_1e3,
        "tar_far_1e-4": self.tar_far_1e4,
        "fold_accuracies": [float(a) for a in self.accuracies],
        "fold_thresholds": [float(t) for t in self.best_thresholds],
        "single_view": self.single_view.as_dict(),
    }


def evaluate_flip_pairs(original, flipped, issame, name="",
                        nrof_folds=protocol.NROF_FOLDS):
  """InsightFace's numbers from raw original and flipped pair embeddings.

  Args:
    original: [2N, D] raw embeddings; rows 2i, 2i + 1 form pair i.
    flipped: [2N, D] raw embeddings of the flipped images.
    issame: [N] bools.
    name: target name for the result.
    nrof_folds: number of folds.

  Returns:
    A `VerificationResult`.
  """
  original = np.asarray(original, dtype=np.float64)
  flipped = np.asarray(flipped, dtype=np.float64)
  xnorm = float(np.mean(np.linalg.norm(np.concatenate([original, flipped]), axis=1)))
  summed = embedding_lib.combine(original, flipped, embedding_lib.FLIP_SUM)
  metrics = protocol.evaluate_embeddings(summed, issame, nrof_folds)
  single = OperatingPoint.measure(
      embedding_lib.combine(original, None, embedding_lib.SINGLE_VIEW), issame,
      embedding_lib.SINGLE_VIEW, nrof_folds)
  issame = np.asarray(issame, dtype=bool)
  dist = metrics["distances"]
  return VerificationResult(
      name=name,
      num_pairs=int(len(issame)),
      accuracy_flip_mean=metrics["accuracy_mean"],
      accuracy_flip_std=metrics["accuracy_std"],
      xnorm=xnorm,
      best_threshold=metrics["best_threshold"],
      threshold_accuracy=metrics["best_threshold_accuracy"],
      val=metrics["val"],
      val_std=metrics["val_std"],
      far=metrics["far"],
      tar_far_1e3=roc.tar_at_far(dist, issame, 1e-3),
      tar_far_1e4=roc.tar_at_far(dist, issame, 1e-4),
      accuracies=metrics["accuracy"],
      best_thresholds=metrics["best_thresholds"],
      distances=dist,
      issame=issame,
      single_view=single,
  )


def check_foldable(vbin, nrof_folds=protocol.NROF_FOLDS):
  """Raises ValueError, naming the file, when `vbin` has fewer pairs than folds."""
  verification_bin.check_pair_count(vbin.path, vbin.num_pairs, nrof_folds)


def _images_for(model, vbin, images, verbose):
  if images is None:
    images = decode_bin_images(vbin, model.image_size, verbose)
  if len(images) != 2 * vbin.num_pairs:
    raise ValueError(f"{vbin.path}: {len(images)} decoded images for "
                     f"{vbin.num_pairs} pairs")
  return images


def verify(model, vbin, batch_size=64, images=None, nrof_folds=protocol.NROF_FOLDS,
           verbose=True):
  """Runs InsightFace's verification protocol on one `.bin`.

  Args:
    model: anything `tfface.inference.as_embedding_model` takes: an
      `EmbeddingModel`, a Keras backbone, a model path, or a callable mapping
      a uint8 [b, H, W, 3] RGB batch to raw embeddings [b, D].
    vbin: the `VerificationBin` (pairs and labels; images unless `images`).
    batch_size: images per forward pass.
    images: optional uint8 [2N, H, W, 3] from `decode_bin_images`, to skip
      decoding when the same `.bin` is verified repeatedly.
    nrof_folds: cross-validation folds (10 in every published number).
    verbose: show decoding and embedding progress (rate, ETA) on stderr.

  Returns:
    A `VerificationResult`.

  Raises:
    ValueError: undecodable images, image and label counts that disagree, or
      fewer pairs than folds.
  """
  check_foldable(vbin, nrof_folds)
  model = loading.as_embedding_model(model)
  images = _images_for(model, vbin, images, verbose)
  original, flipped = model.raw_and_flipped(images, batch_size, flip=True,
                                            verbose=verbose, desc=f"verify {vbin.name}")
  return evaluate_flip_pairs(original, flipped, vbin.issame, vbin.name, nrof_folds)


def measure_operating_point(model, vbin, embedding, batch_size=64, images=None,
                            nrof_folds=protocol.NROF_FOLDS, verbose=True):
  """The operating point of one embedding form on one `.bin`.

  Cheaper than `verify` for `single_view` (no mirrored images), and what an
  export stores as the threshold of the embedding it serves.

  Args:
    model: as in `verify`.
    vbin: the `VerificationBin`.
    embedding: `single_view` or `flip_sum`.
    batch_size: images per forward pass.
    images: optional decoded images, as in `verify`.
    nrof_folds: cross-validation folds.
    verbose: show progress on stderr.

  Returns:
    An `OperatingPoint`.
  """
  embedding = embedding_lib.check_embedding(embedding)
  check_foldable(vbin, nrof_folds)
  model = loading.as_embedding_model(model)
  images = _images_for(model, vbin, images, verbose)
  unit = model.embed(images, embedding, batch_size, verbose,
                     desc=f"threshold {vbin.name} ({embedding})")
  return OperatingPoint.measure(unit, vbin.issame, embedding, nrof_folds)
