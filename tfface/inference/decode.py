"""The one decode policy: images decode to exactly the pixels OpenCV gives.

InsightFace decodes with OpenCV (`cv2.imdecode`, libjpeg's accurate integer
IDCT). TensorFlow's default JPEG decoder uses the fast integer IDCT, which
on a q95 112x112 face changes about two thirds of the pixel values by up to
17 levels; a model trained on those pixels and served on OpenCV's sees a
slightly different input distribution. So every path decodes alike:

* numpy (verification, IJB, embedding files): `decode_image` = `cv2.imdecode`
  then BGR -> RGB;
* the training input: `decode_batch`, the same OpenCV calls over a chunk of
  records (with their horizontal flips), run by `tf.data` threads: OpenCV
  itself, and the fastest way measured to run this decoder in the pipeline
  (a `tf.data` element or a `map_fn` iteration per image costs 10-30 us
  more per image than a 112x112 decode's 55 us);
* TensorFlow graphs (the SavedModel's `serving_default`): `decode_image_tf`
  = `tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")`, equal to
  `cv2.imdecode` pixel for pixel; other formats through `tf.io.decode_image`.

tests/test_decode.py checks every path against `cv2.imdecode`.

Images that are not the model's size are resized as InsightFace's loaders
do: shorter side to the target with bicubic interpolation, then a centre
crop (`resize_like_insightface`; `decode_and_resize_tf` in graphs, where
TensorFlow's bicubic kernel differs from OpenCV's by a level or two).
"""
import cv2
import numpy as np

# libjpeg's accurate integer IDCT: the one OpenCV (and InsightFace) uses.
TF_DCT_METHOD = "INTEGER_ACCURATE"


def resize_like_insightface(img, size):
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
    return resize_like_insightface(rgb, tuple(image_size)), True
  return rgb, False


# TensorFlow takes a returned numpy array's buffer without copying only when
# it is aligned to Eigen's 64 bytes; numpy aligns to 16. For a chunk of 256
# 112x112 images the copy (and faulting in its fresh pages) took 0.2-0.3 ms
# of CPU that an aligned buffer saves (tf.numpy_function, measured).
_TF_ALIGN = 64


def _aligned_empty(shape):
  """An uninitialized uint8 array of `shape` whose data starts on a 64-byte boundary."""
  size = int(np.prod(shape))
  buf = np.empty(size + _TF_ALIGN, np.uint8)
  start = -buf.ctypes.data % _TF_ALIGN
  return buf[start:start + size].reshape(shape)


def decode_batch(data, image_size, flips=None):
  """Decodes a chunk of encoded images of one size, as `decode_image` does.

  Args:
    data: sequence of encoded images (bytes).
    image_size: `(height, width)` every image must decode to.
    flips: optional sequence of bools; those images are mirrored
      horizontally (the training input's augmentation).

  Returns:
    `(images, keep)`: uint8 [n_kept, height, width, 3] RGB, and a bool [n]
    mask of the images kept. An image that does not decode, or decodes to
    another size, is left out (the training input drops and counts it).
  """
  height, width = (int(v) for v in image_size)
  out = _aligned_empty((len(data), height, width, 3))
  keep = np.zeros(len(data), bool)
  kept = 0
  for i, encoded in enumerate(data):
    buf = np.frombuffer(encoded, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None or bgr.shape != (height, width, 3):
      continue
    if flips is not None and flips[i]:
      bgr = cv2.flip(bgr, 1)
    cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[kept])
    keep[i] = True
    kept += 1
  return out[:kept], keep


def decode_image_tf(data):
  """One encoded image (scalar tf.string) -> uint8 [H, W, 3] RGB, as `decode_image`.

  JPEG goes through `decode_jpeg` with the accurate integer IDCT, so pixels
  equal `cv2.imdecode`'s; PNG/BMP/GIF through `decode_image` (lossless
  formats decode alike everywhere).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, channels=3, dct_method=TF_DCT_METHOD),
      lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
  return tf.ensure_shape(image, [None, None, 3])


def resize_like_insightface_tf(image, image_size):
  """In a graph: uint8 [H, W, 3] -> uint8 [height, width, 3], as `resize_like_insightface`.

  Images of the target size pass through untouched; others get the shorter
  side scaled to the target (bicubic) and a centre crop.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  height, width = image_size

  def resize():
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.reduce_max(tf.constant([height, width], tf.float32) / shape)
    new_size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), [height, width])
    resized = tf.image.resize(tf.cast(image, tf.float32), new_size, method="bicubic")
    resized = tf.image.resize_with_crop_or_pad(resized, height, width)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

  same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
  return tf.ensure_shape(tf.cond(same_size, lambda: image, resize), [height, width, 3])


def decode_and_resize_tf(data, image_size):
  """In a graph: encoded bytes -> uint8 [height, width, 3] RGB of the model's input size.

  `decode_image_tf` then `resize_like_insightface_tf`: what the SavedModel's
  `serving_default` does to every image it receives.
  """
  return resize_like_insightface_tf(decode_image_tf(data), tuple(image_size))
