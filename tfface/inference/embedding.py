"""The one embedding wrapper: uint8 RGB pixels in, raw float32 embeddings out.

Every path that runs a backbone on images goes through here: verification
(`tfface.evaluation`), the trainer's periodic verification, the exported
SavedModel's signatures (`raw_embedding_tf` and `embedding_tf` are traced
into the graph) and the tools that embed or compare files.

Two embedding forms exist, and a decision threshold belongs to one of them:

* `SINGLE_VIEW`: the image's own embedding, L2-normalized;
* `FLIP_SUM`: the image's embedding plus that of its horizontal mirror,
  L2-normalized (InsightFace's "Accuracy-Flip" form).

Batches have a fixed size, as in InsightFace's `verification.py`: the last
batch is the final `batch_size` images rather than a short one, so a traced
function sees one shape only (`embed_batches`).
"""
import weakref

import numpy as np

from tfface import progress as progress_lib

SINGLE_VIEW = "single_view"
FLIP_SUM = "flip_sum"
EMBEDDINGS = (SINGLE_VIEW, FLIP_SUM)

# One traced function per Keras model: the trainer verifies the same backbone
# every few thousand steps, and retracing costs seconds each time.
_KERAS_RAW_FNS = weakref.WeakKeyDictionary()


def check_embedding(embedding):
  """Returns `embedding` if it names a form in `EMBEDDINGS`, else raises ValueError."""
  if embedding not in EMBEDDINGS:
    raise ValueError(f"unknown embedding form {embedding!r}; expected one of "
                     f"{list(EMBEDDINGS)}")
  return embedding


def embedding_for_flip(flip):
  """`FLIP_SUM` when the mirror's embedding is added, else `SINGLE_VIEW`."""
  return FLIP_SUM if flip else SINGLE_VIEW


def raw_embedding_tf(model, images):
  """In a TensorFlow graph: the backbone's raw float32 embedding of uint8 images.

  The model normalizes pixels itself; it runs in inference mode (BatchNorm
  statistics, no dropout), and a mixed-precision output is cast back to
  float32.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)


def embedding_tf(model, images, flip=False):
  """In a TensorFlow graph: L2-normalized embeddings, flip-summed if `flip`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  emb = raw_embedding_tf(model, images)
  if flip:
    emb = emb + raw_embedding_tf(model, tf.reverse(images, axis=[2]))
  return tf.math.l2_normalize(emb, axis=1)


def keras_raw_fn(model):
  """A Keras backbone as `uint8 numpy [b, H, W, 3] -> float32 numpy [b, D]`.

  The traced function is cached per model (weakly: the cache does not keep
  the model alive).
  """
  fn = _KERAS_RAW_FNS.get(model)
  if fn is not None:
    return fn
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model_ref = weakref.ref(model)  # a strong reference would pin the cache key

  @tf.function(reduce_retracing=True)
  def raw(images):
    return raw_embedding_tf(model_ref(), images)

  fn = lambda images: raw(images).numpy()
  _KERAS_RAW_FNS[model] = fn
  return fn


def l2_normalize(embeddings):
  """Rows divided by their L2 norm; all-zero rows stay zero (sklearn's `normalize`)."""
  embeddings = np.asarray(embeddings)
  norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
  return embeddings / np.where(norms == 0, 1.0, norms)


def embed_batches(raw_fn, images, batch_size=64, bar=None):
  """Raw embeddings of `images` in batches of exactly `batch_size`.

  Like InsightFace, the last batch is the final `batch_size` images rather
  than a short batch, so a compiled model sees one shape only.

  Args:
    raw_fn: callable, uint8 [b, H, W, 3] -> [b, D] raw embeddings.
    images: uint8 [n, H, W, 3].
    batch_size: images per call (at least 1).
    bar: an optional progress bar, advanced by the number of new images.

  Returns:
    float32 [n, D].

  Raises:
    ValueError: `batch_size` is below 1 or there are no images.
  """
  n = len(images)
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  if n == 0:
    raise ValueError("no images to embed")
  batch_size = min(int(batch_size), n)
  chunks = []
  for start in range(0, n, batch_size):
    end = min(start + batch_size, n)
    out = np.asarray(raw_fn(images[end - batch_size:end]), dtype=np.float32)
    chunks.append(out[batch_size - (end - start):])
    if bar is not None:
      bar.update(end - start)
  return np.concatenate(chunks, axis=0)


def raw_and_flipped(raw_fn, images, batch_size=64, flip=True, verbose=True,
                    desc="embed"):
  """Raw embeddings of `images` and, if `flip`, of their horizontal mirrors.

  Args:
    raw_fn: callable, uint8 [b, H, W, 3] -> [b, D] raw embeddings.
    images: uint8 [n, H, W, 3].
    batch_size: images per call.
    flip: also embed the mirrored images.
    verbose: show progress (rate and ETA) on stderr; False for silence.
    desc: what the progress line says is being embedded.

  Returns:
    `(original, flipped)`, float32 [n, D] each; `flipped` is None without `flip`.
  """
  total = len(images) * (2 if flip else 1)
  with progress_lib.progress(total=total, desc=desc, unit="images",
                             disable=not verbose) as bar:
    original = embed_batches(raw_fn, images, batch_size, bar)
    flipped = None
    if flip:
      mirror = lambda batch: raw_fn(np.ascontiguousarray(batch[:, :, ::-1]))
      flipped = embed_batches(mirror, images, batch_size, bar)
  return original, flipped


def combine(original, flipped, embedding):
  """The normalized embedding of one form from raw original (and flipped) rows.

  Args:
    original: [n, D] raw embeddings.
    flipped: [n, D] raw embeddings of the mirrored images (`FLIP_SUM` only).
    embedding: `SINGLE_VIEW` or `FLIP_SUM`.

  Returns:
    float64 [n, D] unit rows (all-zero rows stay zero).
  """
  original = np.asarray(original, dtype=np.float64)
  if check_embedding(embedding) == SINGLE_VIEW:
    return l2_normalize(original)
  if flipped is None:
    raise ValueError("the flip_sum embedding needs the mirrored images' embeddings")
  return l2_normalize(original + np.asarray(flipped, dtype=np.float64))
