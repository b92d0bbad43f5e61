"""SavedModel export in the layout and with the signatures TF Serving expects.

`export_saved_model` writes `export_dir/VERSION/{saved_model.pb, variables/,
assets/tfface_metadata.json}` with two signatures:

* `serving_default`: `image_bytes` (tf.string [batch], JPEG/PNG/BMP/GIF bytes;
  TF Serving's REST API carries them as `{"b64": ...}` because the name ends
  in `_bytes`) -> `embedding` (float32 [batch, D], L2-normalized);
* `serve_images`: `images` (uint8 [batch, H, W, 3], RGB) -> `embedding`.

Decoding, resizing, the model's own input normalization and the optional flip
test-time augmentation all live in the graph, so a client sends raw image
files and nothing else. A third, non-signature function `raw_embedding`
(uint8 images -> un-normalized embeddings) lets tfface's own tools run the
verification protocol (XNorm, flip sum) on an export.
"""
import contextlib
import json
import logging
import os
import shutil
import tempfile

from tfface.export import loading


@contextlib.contextmanager
def quiet_tensorflow_info():
  """Silences TensorFlow's INFO lines while saving or converting.

  Saving logs one line per captured variable handle ("input name(s) resource
  with unsupported characters", sharding, fingerprint), which under absl's
  default INFO verbosity buries the tool's own output and reads like errors.
  """
  # TF logs through both its own logger and absl's, depending on the module,
  # and in TF 2.21 a raised level did not stop the saver's INFO lines: filter.
  loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
  drop_info = lambda record: record.levelno >= logging.WARNING
  for logger in loggers:
    logger.addFilter(drop_info)
  try:
    yield
  finally:
    for logger in loggers:
      logger.removeFilter(drop_info)


def _decode_and_resize(data, image_size):
  """One encoded image -> uint8 [H, W, 3] RGB of the model's input size.

  JPEG goes through `decode_jpeg` with the accurate integer IDCT, the one
  OpenCV and libjpeg use by default, so pixels match `cv2.imdecode`; other
  formats through `decode_image`. Other sizes are resized like the
  verification loader: shorter side to the target, bicubic, centre crop.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  height, width = image_size
  image = tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
      lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
  image = tf.ensure_shape(image, [None, None, 3])

  def resize():
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.reduce_max(tf.constant([height, width], tf.float32) / shape)
    new_size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), [height, width])
    resized = tf.image.resize(tf.cast(image, tf.float32), new_size, method="bicubic")
    resized = tf.image.resize_with_crop_or_pad(resized, height, width)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

  same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
  return tf.cond(same_size, lambda: image, resize)


def build_serving_module(model, flip_tta=False):
  """A `tf.Module` with the export's functions, ready for `tf.saved_model.save`.

  Args:
    model: a Keras backbone (raw RGB in, raw embedding out).
    flip_tta: add the embedding of the horizontal flip before normalizing.

  Returns:
    `(module, signatures)`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image_size = tuple(int(v) for v in model.input_shape[1:3])
  images_spec = tf.TensorSpec([None, *image_size, 3], tf.uint8, name="images")

  def raw(images):
    return tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)

  def normalized(images):
    emb = raw(images)
    if flip_tta:
      emb = emb + raw(tf.reverse(images, axis=[2]))
    return tf.math.l2_normalize(emb, axis=1)

  @tf.function(input_signature=[images_spec])
  def raw_embedding(images):
    return raw(images)

  @tf.function(input_signature=[images_spec])
  def serve_images(images):
    return {"embedding": normalized(images)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
  def serve_bytes(image_bytes):
    images = tf.map_fn(lambda b: _decode_and_resize(b, image_size), image_bytes,
                       fn_output_signature=tf.TensorSpec([*image_size, 3], tf.uint8))
    return {"embedding": normalized(images)}

  module = tf.Module(name="tfface_embedding")
  module.raw_embedding = raw_embedding
  module.serve_images = serve_images
  module.serve_bytes = serve_bytes
  concrete = [fn.get_concrete_function() for fn in (raw_embedding, serve_images, serve_bytes)]
  # The functions close over the Keras model rather than owning it (as Keras'
  # ExportArchive does); the variables they capture must still be reachable
  # from the saved object, so list them on it.
  seen, variables = set(), []
  for fn in concrete:
    for v in fn.variables:
      if id(v) not in seen:
        seen.add(id(v))
        variables.append(v)
  module.model_variables = variables
  return module, {"serving_default": concrete[2], "serve_images": concrete[1]}


def resolve_model(model_or_path):
  """A Keras backbone, the metadata (threshold) known for it, and its path.

  Args:
    model_or_path: a Keras model, or a `.keras` file / training workdir.

  Returns:
    `(keras_model, metadata, source_path)`.

  Raises:
    ValueError: the path is a SavedModel export or not loadable.
  """
  if not isinstance(model_or_path, (str, os.PathLike)):
    return model_or_path, {}, ""
  loaded = loading.load_embedding_model(model_or_path)
  if loaded.keras_model is None:
    raise ValueError(f"{model_or_path}: already a SavedModel export; export the "
                     ".keras file or training workdir it came from instead")
  return loaded.keras_model, loaded.metadata, os.fspath(model_or_path)


def export_saved_model(model_or_path, export_dir, version, flip_tta=False,
                       overwrite=False, metadata=None):
  """Exports a backbone for TF Serving as `export_dir/version`.

  Args:
    model_or_path: a Keras backbone, or a `.keras` file / training workdir.
    export_dir: the model base directory TF Serving watches (`BASE/NAME`).
    version: positive integer version (the subdirectory name).
    flip_tta: embed the horizontal flip too and add it before normalizing.
    overwrite: replace an existing version instead of refusing.
    metadata: extra entries for `assets/tfface_metadata.json` (e.g.
      `{"threshold": 1.3}`); a workdir's verification threshold is included.

  Returns:
    The path of the written version directory.

  Raises:
    ValueError: bad version, an existing version without `overwrite`, or a
      model that cannot be loaded.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tfface  # pylint: disable=g-import-not-at-top
  try:
    version = int(version)
  except (TypeError, ValueError):
    raise ValueError(f"version must be a positive integer, got {version!r}") from None
  if version <= 0:
    raise ValueError(f"version must be a positive integer, got {version}")
  target = os.path.join(os.fspath(export_dir), str(version))
  if os.path.exists(target) and not overwrite:
    raise ValueError(f"{target}: version {version} already exists; pass "
                     "overwrite=True (--overwrite) or choose another version")
  model, known, source = resolve_model(model_or_path)
  module, signatures = build_serving_module(model, flip_tta)
  info = {"tfface_version": tfface.__version__, "source": source,
          "image_size": list(model.input_shape[1:3]),
          "embedding_size": int(model.output_shape[-1]), "flip_tta": bool(flip_tta),
          "threshold": None, **known, **(metadata or {})}
  os.makedirs(export_dir, exist_ok=True)
  # TF Serving only loads numeric directories, so the dot-named work
  # directory is invisible to it until the rename makes the version appear.
  work = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_dir)
  try:
    meta_path = os.path.join(work, loading.METADATA_FILE)
    with open(meta_path, "w") as f:
      json.dump(info, f, indent=2, sort_keys=True)
    module.metadata = tf.saved_model.Asset(meta_path)
    staged = os.path.join(work, "model")
    with quiet_tensorflow_info():
      tf.saved_model.save(module, staged, signatures=signatures)
    if os.path.exists(target):
      old = os.path.join(work, "replaced")
      os.rename(target, old)
    os.rename(staged, target)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return target
