"""Embedding a verification `.bin` the way InsightFace's `verification.py` does.

Each image is decoded to RGB (InsightFace uses `mx.image.imdecode`, which
returns RGB), resized when its size differs from the model's input, embedded
as is and horizontally flipped with the raw (un-normalized) embedding, and the
two embeddings are summed and L2-normalized before `evaluate_embeddings`.

Decoding dominates the cost for small models, and the trainer verifies every
few thousand steps, so `decode_bin_images` is separate and its result can be
passed back to `verify(..., images=...)`.
"""
import dataclasses
import logging
import weakref

import cv2
import numpy as np

from tfface.evaluation import protocol
from tfface.evaluation import roc

_LOG = logging.getLogger(__name__)
DEFAULT_IMAGE_SIZE = (112, 112)
# One traced function per Keras model: the trainer verifies the same model
# every few thousand steps, and retracing costs seconds each time.
_KERAS_EMBED_FNS = weakref.WeakKeyDictionary()


def _resize_like_insightface(img, size):
  """Shorter side to `size` with bicubic interpolation (`mx.image.resize_short`).

  InsightFace then expects a square image; for a non-square source we also
  crop the centre so the result always has the model's input size.
  """
  height, width = img.shape[:2]
  target_h, target_w = size
  scale = max(target_h / height, target_w / width)
  new_h, new_w = max(target_h, round(height * scale)), max(target_w, round(width * scale))
  img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
  top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
  return img[top:top + target_h, left:left + target_w]


def decode_image(data, image_size=None, where="<image>"):
  """Decodes JPEG/PNG/BMP bytes to an RGB uint8 array, resized if asked.

  Args:
    data: encoded image bytes.
    image_size: `(height, width)` wanted, or None to keep the decoded size.
    where: a description of the image for error messages (file and index).

  Returns:
    `(image, resized)`: the uint8 [H, W, 3] RGB array and whether it was resized.

  Raises:
    ValueError: the bytes are not a decodable image.
  """
  buf = np.frombuffer(data, dtype=np.uint8)
  bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
  if bgr is None:
    raise ValueError(f"{where}: cannot decode image ({len(data)} bytes; "
                     "expected JPEG, PNG or BMP)")
  rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  if image_size is not None and rgb.shape[:2] != tuple(image_size):
    return _resize_like_insightface(rgb, tuple(image_size)), True
  return rgb, False


def decode_bin_images(vbin, image_size=DEFAULT_IMAGE_SIZE):
  """Decodes every image of a `.bin` once, for repeated `verify` calls.

  Args:
    vbin: a `tfface.data.verification_bin.VerificationBin`.
    image_size: `(height, width)` of the model input.

  Returns:
    uint8 array [2N, height, width, 3], RGB.

  Raises:
    ValueError: an image cannot be decoded (the message names file and index).
  """
  image_size = tuple(int(v) for v in image_size)
  out = np.empty((len(vbin.images), *image_size, 3), dtype=np.uint8)
  resized = 0
  for i, data in enumerate(vbin.images):
    out[i], was_resized = decode_image(data, image_size, f"{vbin.path}: image {i}")
    resized += was_resized
  if resized:
    _LOG.warning("%s: %d of %d images are not %dx%d; resized them as InsightFace "
                 "does (shorter side, bicubic)", vbin.path, resized,
                 len(vbin.images), image_size[0], image_size[1])
  return out


def as_embed_fn(model):
  """Wraps a Keras model as `uint8 [b, H, W, 3] -> numpy float32 [b, D]`.

  Any other callable is returned unchanged, its output passed to `np.asarray`.
  """
  import keras  # pylint: disable=g-import-not-at-top
  if not isinstance(model, keras.Model):
    return lambda batch: np.asarray(model(batch), dtype=np.float32)
  if model in _KERAS_EMBED_FNS:
    return _KERAS_EMBED_FNS[model]
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  model_ref = weakref.ref(model)  # a strong reference would pin the cache key

  @tf.function(reduce_retracing=True)
  def _embed(batch):
    return tf.cast(model_ref()(tf.cast(batch, tf.float32), training=False), tf.float32)

  fn = lambda batch: _embed(batch).numpy()
  _KERAS_EMBED_FNS[model] = fn
  return fn


def model_image_size(embed_fn):
  """The `(height, width)` an embedding callable expects (112x112 if unknown)."""
  size = getattr(embed_fn, "image_size", None)
  if size is not None:
    return tuple(size)
  shape = getattr(embed_fn, "input_shape", None)
  if shape is not None and len(shape) == 4 and shape[1] and shape[2]:
    return (int(shape[1]), int(shape[2]))
  return DEFAULT_IMAGE_SIZE


def embed_batches(embed_fn, images, batch_size=64):
  """Raw embeddings of `images` in batches of exactly `batch_size`.

  Like InsightFace, the last batch is the final `batch_size` images rather
  than a short batch, so a compiled model sees one shape only.

  Args:
    embed_fn: callable, uint8 [b, H, W, 3] -> [b, D] (see `as_embed_fn`).
    images: uint8 [n, H, W, 3].
    batch_size: images per call.

  Returns:
    float32 [n, D].
  """
  n = len(images)
  batch_size = max(1, min(batch_size, n))
  chunks = []
  for start in range(0, n, batch_size):
    end = min(start + batch_size, n)
    out = np.asarray(embed_fn(images[end - batch_size:end]), dtype=np.float32)
    chunks.append(out[batch_size - (end - start):])
  return np.concatenate(chunks, axis=0)


@dataclasses.dataclass
class VerificationResult:
  """The numbers InsightFace prints for one target, plus what the ROC needs."""

  name: str
  num_pairs: int
  accuracy_flip_mean: float
  accuracy_flip_std: float
  xnorm: float
  best_threshold: float
  val: float
  val_std: float
  far: float
  tar_far_1e3: float
  tar_far_1e4: float
  accuracies: np.ndarray
  best_thresholds: np.ndarray
  distances: np.ndarray
  issame: np.ndarray

  def as_dict(self):
    """JSON-ready summary; `val_far_1e-3` is InsightFace's cross-validated VAL."""
    return {
        "num_pairs": self.num_pairs,
        "accuracy_flip_mean": self.accuracy_flip_mean,
        "accuracy_flip_std": self.accuracy_flip_std,
        "xnorm": self.xnorm,
        "best_threshold": self.best_threshold,
        "val_far_1e-3": self.val,
        "val_std": self.val_std,
        "far": self.far,
        "tar_far_1e-3": self.tar_far_1e3,
        "tar_far_1e-4": self.tar_far_1e4,
        "fold_accuracies": [float(a) for a in self.accuracies],
        "fold_thresholds": [float(t) for t in self.best_thresholds],
    }


def flip_embeddings(embed_fn, images, batch_size=64):
  """Raw embeddings of `images` and of their horizontal flips, [n, D] each."""
  original = embed_batches(embed_fn, images, batch_size)
  flipped = embed_batches(lambda b: embed_fn(np.ascontiguousarray(b[:, :, ::-1])),
                          images, batch_size)
  return original, flipped


def evaluate_flip_pairs(original, flipped, issame, name="", nrof_folds=10):
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
  summed = original + flipped
  norms = np.linalg.norm(summed, axis=1, keepdims=True)
  # sklearn.preprocessing.normalize leaves all-zero rows at zero.
  summed = summed / np.where(norms == 0, 1.0, norms)
  metrics = protocol.evaluate_embeddings(summed, issame, nrof_folds)
  issame = np.asarray(issame, dtype=bool)
  dist = metrics["distances"]
  return VerificationResult(
      name=name,
      num_pairs=int(len(issame)),
      accuracy_flip_mean=metrics["accuracy_mean"],
      accuracy_flip_std=metrics["accuracy_std"],
      xnorm=xnorm,
      best_threshold=metrics["best_threshold"],
      val=metrics["val"],
      val_std=metrics["val_std"],
      far=metrics["far"],
      tar_far_1e3=roc.tar_at_far(dist, issame, 1e-3),
      tar_far_1e4=roc.tar_at_far(dist, issame, 1e-4),
      accuracies=metrics["accuracy"],
      best_thresholds=metrics["best_thresholds"],
      distances=dist,
      issame=issame,
  )


def verify(embed_fn, vbin, batch_size=64, images=None, nrof_folds=10):
  """Runs InsightFace's verification protocol on one `.bin`.

  Args:
    embed_fn: a Keras model, or a callable mapping a uint8 [b, H, W, 3] RGB
      batch to raw embeddings [b, D].
    vbin: the `VerificationBin` (pairs and labels; images unless `images`).
    batch_size: images per forward pass.
    images: optional uint8 [2N, H, W, 3] from `decode_bin_images`, to skip
      decoding when the same `.bin` is verified repeatedly.
    nrof_folds: cross-validation folds (10 in every published number).

  Returns:
    A `VerificationResult`.

  Raises:
    ValueError: undecodable images, or image and label counts that disagree.
  """
  image_size = model_image_size(embed_fn)
  fn = as_embed_fn(embed_fn)
  if images is None:
    images = decode_bin_images(vbin, image_size)
  if len(images) != 2 * vbin.num_pairs:
    raise ValueError(f"{vbin.path}: {len(images)} decoded images for "
                     f"{vbin.num_pairs} pairs")
  original, flipped = flip_embeddings(fn, images, batch_size)
  return evaluate_flip_pairs(original, flipped, vbin.issame, vbin.name, nrof_folds)
