"""Loose crops -> aligned faces -> raw embeddings, streamed in chunks.

IJB-C has 469,375 loose crops; aligned, they would take 17.6 GB, so they
are decoded and aligned a chunk at a time by a thread pool (OpenCV releases
the GIL) while the model embeds the previous chunk. Each chunk is embedded
exactly as `tools/verify.py` embeds a `.bin`: `tfface.inference.embedding`'s
`embed_batches` in fixed batches of `batch_size`, the mirror images in a
second pass, so the throughput is verify's.
"""
import concurrent.futures
import numbers
import os

import cv2
import numpy as np

from tfface import progress as progress_lib
from tfface.align import transform
from tfface.inference import decode
from tfface.inference import embedding as embedding_lib
from tfface.inference import loading

CHUNK_IMAGES = 2048


def load_model(path):
  """Loads any model form tfface can point at, for IJB (the one place that does).

  Returns:
    An embedding callable: uint8 RGB [b, H, W, 3] -> raw float32 [b, D],
    with `.image_size`.
  """
  return loading.load_embedding_model(path)


def aligned_face(meta, index, image_size=112):
  """Decodes loose crop `index` (OpenCV, RGB) and aligns it by its 5 landmarks.

  Args:
    meta: an `IJBMeta`.
    index: the image's row.
    image_size: side of the aligned face (112, or a multiple of 112 or 128).

  Returns:
    uint8 [image_size, image_size, 3] RGB.

  Raises:
    OSError: the file cannot be read.
    ValueError: undecodable, or a landmark outside the image.
  """
  path = meta.image_path(index)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise OSError(f"{meta.where(index)}: cannot read {path} ({e.strerror})") from None
  image, _ = decode.decode_image(data, where=f"{meta.where(index)}: {path}")
  landmarks = meta.landmarks[index].astype(np.float64)
  height, width = image.shape[:2]
  outside = (landmarks[:, 0] > width) | (landmarks[:, 1] > height) | (landmarks < 0).any(1)
  if outside.any():
    point = int(np.argmax(outside))
    raise ValueError(f"{meta.where(index)}: landmark {point + 1} at "
                     f"({landmarks[point, 0]:g}, {landmarks[point, 1]:g}) is outside the "
                     f"{width}x{height} image {path}")
  # The reference warps the BGR image and then converts; per-channel, the same.
  return cv2.warpAffine(image, transform.estimate_norm(landmarks, image_size),
                        (image_size, image_size), borderValue=0.0)


def _chunks(num_images, chunk, batch_size):
  """`(load_from, keep_from, end)` per chunk; a short last chunk reaches back.

  A chunk shorter than `batch_size` would give the model a new batch shape
  (a retrace); instead it loads the `batch_size` last images and keeps the
  embeddings from `keep_from` on, as `embed_batches` does within a chunk.
  """
  for lo in range(0, num_images, chunk):
    hi = min(lo + chunk, num_images)
    yield min(lo, max(0, hi - batch_size)), lo, hi


def _positive_int(value):
  return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
          and value >= 1)


def check_options(batch_size, num_threads):
  """Raises ValueError unless `batch_size` >= 1 and `num_threads` is None or >= 1."""
  if not _positive_int(batch_size):
    raise ValueError(f"IJB embedding: batch_size must be a positive integer, got {batch_size!r}")
  if num_threads is not None and not _positive_int(num_threads):
    raise ValueError("IJB embedding: num_threads must be a positive integer (or None for "
                     f"the CPU count, at most 8), got {num_threads!r}")


def embed_images(embed_fn, meta, batch_size=64, flip=True, num_threads=None,
                 chunk_images=CHUNK_IMAGES, verbose=True):
  """Raw embeddings of every aligned image of `meta` (and of its mirror image).

  Args:
    embed_fn: a Keras model or a callable uint8 [b, H, W, 3] -> [b, D]
      (square H = W).
    meta: an `IJBMeta`.
    batch_size: images per forward pass (at least 1).
    flip: also embed the mirror images.
    num_threads: decoding/aligning threads, at least 1 (None: the CPU count,
      at most 8).
    chunk_images: images aligned per chunk (rounded to whole batches).
    verbose: show progress with rate and ETA.

  Returns:
    `(original, flipped)`: float32 [n, D] each; `flipped` is None without flip.

  Raises:
    ValueError: `batch_size` or `num_threads` below 1.
    ValueError, OSError: an image that cannot be read, decoded or aligned.
  """
  check_options(batch_size, num_threads)
  model = loading.as_embedding_model(embed_fn)
  height, width = model.image_size
  if height != width:
    raise ValueError(f"IJB aligns square faces; the model expects {height}x{width}")
  fn = model
  if num_threads is None:
    num_threads = min(8, os.cpu_count() or 1)
  chunk = batch_size * max(1, round(chunk_images / batch_size))
  n = meta.num_images
  outputs = None
  bar = progress_lib.progress(total=n, desc=f"ijb {meta.paths.target}", unit="images",
                              disable=not verbose)
  pool = concurrent.futures.ThreadPoolExecutor(num_threads)
  load = lambda lo, hi: [pool.submit(aligned_face, meta, i, height) for i in range(lo, hi)]
  try:
    plan = list(_chunks(n, chunk, batch_size))
    pending = load(plan[0][0], plan[0][2])
    for k, (load_from, keep_from, end) in enumerate(plan):
      images = np.stack([f.result() for f in pending])
      if k + 1 < len(plan):  # align the next chunk while this one is embedded
        pending = load(plan[k + 1][0], plan[k + 1][2])
      original, flipped = embedding_lib.raw_and_flipped(fn, images, batch_size, flip,
                                                        verbose=False)
      embeddings = (original, flipped) if flip else (original,)
      if outputs is None:
        outputs = [np.empty((n, e.shape[1]), np.float32) for e in embeddings]
      for out, e in zip(outputs, embeddings):
        out[keep_from:end] = e[keep_from - load_from:]
      bar.update(end - keep_from)
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
  return outputs[0], (outputs[1] if flip else None)
