"""One way to load any face encoder tfface can point at.

`load_embedding_model(path)` accepts:

* a SavedModel written by `tfface.export.export_saved_model` (the version
  directory, or the TF Serving model base, in which case the highest numbered
  version is used, as TF Serving does);
* a training workdir (`best_backbone.keras`, else `backbone.keras`; the
  decision threshold comes from `verification.json`);
* a `.keras` file of a backbone.

`as_embedding_model` also takes an in-memory Keras backbone or any callable.
Every form becomes an `EmbeddingModel` that maps uint8 RGB batches to raw
embeddings, so verification, the exporter and the tools treat them alike.
"""
import json
import logging
import os
import zipfile

import numpy as np

from tfface.inference import embedding as embedding_lib

_LOG = logging.getLogger(__name__)
METADATA_FILE = "tfface_metadata.json"
DEFAULT_IMAGE_SIZE = (112, 112)
# Squared distance between L2-normalized embeddings (cosine similarity 0.3)
# when no verification result is known; ArcFace-trained ResNets land near it
# on LFW. Documented in docs/evaluation.md.
DEFAULT_THRESHOLD = 1.4


class EmbeddingModel:
  """A face encoder: uint8 RGB [b, H, W, 3] in, raw float32 embeddings out.

  Attributes:
    image_size: `(height, width)` the model expects.
    metadata: dict (threshold and the embedding form it was measured on,
      source, verification results) or empty.
    source: the path it was loaded from.
    keras_model: the Keras model, or None for a SavedModel.
  """

  def __init__(self, raw_fn, image_size, metadata=None, source="", keras_model=None):
    self._raw_fn = raw_fn
    self.image_size = tuple(int(v) for v in image_size)
    self.metadata = dict(metadata or {})
    self.source = source
    self.keras_model = keras_model

  def __call__(self, images):
    """Raw (un-normalized) embeddings of a uint8 batch, as numpy float32."""
    return np.asarray(self._raw_fn(images), dtype=np.float32)

  @property
  def threshold(self):
    """The squared-distance threshold for "same person" (see `DEFAULT_THRESHOLD`)."""
    value = self.metadata.get("threshold")
    return float(value) if value is not None else DEFAULT_THRESHOLD

  @property
  def threshold_embedding(self):
    """The embedding form (`SINGLE_VIEW`/`FLIP_SUM`) that `threshold` applies to.

    An export names it in its metadata (the form `serving_default` serves);
    a training workdir's thresholds come from verification (flip-summed), and
    so did those of exports written before the form was recorded.
    """
    return embedding_lib.check_embedding(
        self.metadata.get("threshold_embedding", embedding_lib.FLIP_SUM))

  def raw_and_flipped(self, images, batch_size=64, flip=True, verbose=True,
                      desc="embed"):
    """Raw embeddings of `images` and of their mirrors (see `embedding.raw_and_flipped`)."""
    return embedding_lib.raw_and_flipped(self, np.asarray(images, dtype=np.uint8),
                                         batch_size, flip, verbose, desc)

  def embed(self, images, embedding=None, batch_size=64, verbose=True, desc="embed"):
    """L2-normalized embeddings of one form.

    Args:
      images: uint8 [n, H, W, 3] RGB of the model's input size.
      embedding: `SINGLE_VIEW` or `FLIP_SUM`; default `threshold_embedding`,
        the form `threshold` was measured on (for an export: the form it serves).
      batch_size: images per forward pass.
      verbose: show progress on stderr.
      desc: what the progress line calls the images.

    Returns:
      float32 [n, D], unit rows.
    """
    embedding = embedding_lib.check_embedding(embedding or self.threshold_embedding)
    original, flipped = self.raw_and_flipped(
        images, batch_size, embedding == embedding_lib.FLIP_SUM, verbose, desc)
    return embedding_lib.combine(original, flipped, embedding).astype(np.float32)


def from_keras(model, metadata=None, source=""):
  """Wraps an in-memory Keras backbone as an `EmbeddingModel`."""
  return EmbeddingModel(embedding_lib.keras_raw_fn(model), model.input_shape[1:3],
                        metadata, source, keras_model=model)


def as_embedding_model(model):
  """An `EmbeddingModel` from a path, a Keras backbone or a raw-embedding callable.

  Args:
    model: an `EmbeddingModel` (returned as is), a path (`load_embedding_model`),
      a Keras backbone, or a callable mapping uint8 [b, H, W, 3] to raw
      embeddings (its `image_size` or `input_shape` attribute gives the input
      size, else 112x112).

  Returns:
    An `EmbeddingModel`.
  """
  if isinstance(model, EmbeddingModel):
    return model
  if isinstance(model, (str, os.PathLike)):
    return load_embedding_model(model)
  import keras  # pylint: disable=g-import-not-at-top
  if isinstance(model, keras.Model):
    return from_keras(model)
  size = getattr(model, "image_size", None)
  shape = getattr(model, "input_shape", None)
  if size is None and shape is not None and len(shape) == 4 and shape[1] and shape[2]:
    size = shape[1:3]
  return EmbeddingModel(model, size or DEFAULT_IMAGE_SIZE)


def _load_keras_file(path):
  # A .keras file is a zip archive; Keras calls any other file "not found".
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path}: damaged or not a Keras model (not a readable .keras zip "
                     "archive; truncated?)")
  import keras  # pylint: disable=g-import-not-at-top
  # Registers tfface's custom layers with Keras' deserializer.
  import tfface.models  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  try:
    return keras.saving.load_model(path, compile=False)
  except (ValueError, TypeError, OSError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: not a loadable Keras model ({e})") from e


def workdir_threshold(workdir):
  """Threshold and verification summary from a training workdir, if any.

  Reads `verification.json` (`{target: {"best_threshold": ..., "bin": ...}}`,
  or with a nested `"best"` entry) and uses the last target listed, the one
  that selects the best backbone. Its threshold was measured on flip-summed
  embeddings at the latest verification.

  Returns:
    A metadata dict (`threshold`, `threshold_embedding`, `threshold_target`,
    `threshold_bin` when the trainer recorded the file, `verification`),
    empty when the workdir has no usable verification.json.

  Raises:
    ValueError: verification.json is not valid JSON.
  """
  path = os.path.join(workdir, "verification.json")
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not readable JSON ({e})") from e
  if not isinstance(results, dict) or not results:
    return {}
  target, entry = list(results.items())[-1]
  if isinstance(entry, dict) and isinstance(entry.get("best"), dict):
    entry = entry["best"]
  if not isinstance(entry, dict) or "best_threshold" not in entry:
    _LOG.warning("%s: no best_threshold for target %r", path, target)
    return {}
  metadata = {"threshold": float(entry["best_threshold"]),
              "threshold_embedding": embedding_lib.FLIP_SUM,
              "threshold_target": target, "verification": results}
  bin_path = results[target].get("bin") if isinstance(results[target], dict) else None
  if bin_path:
    metadata["threshold_bin"] = bin_path
  return metadata


def is_saved_model(path):
  """Whether `path` is a SavedModel directory (holds `saved_model.pb`)."""
  return os.path.isfile(os.path.join(path, "saved_model.pb"))


def latest_version_dir(base):
  """The highest numeric version under a TF Serving model base, or None."""
  versions = [d for d in os.listdir(base) if d.isdigit()
              and is_saved_model(os.path.join(base, d))]
  return os.path.join(base, max(versions, key=int)) if versions else None


def read_export_metadata(export_path):
  """The `tfface_metadata.json` asset of an export, or {} for foreign SavedModels."""
  path = os.path.join(export_path, "assets", METADATA_FILE)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not readable JSON ({e})") from e


def _load_saved_model(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # TF raises many types for a broken SavedModel
    raise ValueError(f"{path}: cannot load the SavedModel ({e})") from e
  metadata = read_export_metadata(path)
  if hasattr(loaded, "raw_embedding"):
    fn = loaded.raw_embedding
    size = fn.input_signature[0].shape[1:3]
  elif "serve_images" in loaded.signatures:
    # A SavedModel from elsewhere: only normalized embeddings are available.
    sig = loaded.signatures["serve_images"]
    spec = list(sig.structured_input_signature[1].values())[0]
    size = spec.shape[1:3]
    fn = lambda images: sig(**{spec.name: images})["embedding"]
  else:
    raise ValueError(f"{path}: SavedModel has neither tfface's raw_embedding nor a "
                     f"serve_images signature (signatures: {list(loaded.signatures)})")
  model = EmbeddingModel(lambda images: fn(tf.constant(images, tf.uint8)).numpy(),
                         size, metadata, path)
  model.saved_model = loaded  # keep the loaded object (and its variables) alive
  return model


def load_embedding_model(path):
  """Loads a SavedModel export, a TF Serving model base, a training workdir or a `.keras` file.

  Args:
    path: see the module docstring for the accepted forms.

  Returns:
    An `EmbeddingModel`.

  Raises:
    ValueError: the path is none of the accepted forms, or fails to load.
    OSError: the path does not exist.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise OSError(f"{path}: no such file or directory")
  if os.path.isdir(path):
    if is_saved_model(path):
      return _load_saved_model(path)
    for name in ("best_backbone.keras", "backbone.keras"):
      candidate = os.path.join(path, name)
      if os.path.isfile(candidate):
        return from_keras(_load_keras_file(candidate), workdir_threshold(path), candidate)
    version = latest_version_dir(path)
    if version is not None:
      return _load_saved_model(version)
    raise ValueError(f"{path}: neither a SavedModel (saved_model.pb), a TF Serving "
                     "model base (numbered versions), nor a training workdir "
                     "(best_backbone.keras or backbone.keras)")
  if path.endswith(".keras"):
    return from_keras(_load_keras_file(path), {}, path)
  raise ValueError(f"{path}: expected a .keras file, a SavedModel directory or a "
                   "training workdir")
