"""SavedModel export in the layout and with the signatures TF Serving expects.

`export_saved_model` writes `export_dir/VERSION/{saved_model.pb, variables/,
assets/tfface_metadata.json}` with two signatures:

* `serving_default`: `image_bytes` (tf.string [batch], JPEG/PNG/BMP/GIF bytes;
  TF Serving's REST API carries them as `{"b64": ...}` because the name ends
  in `_bytes`) -> `embedding` (float32 [batch, D], L2-normalized);
* `serve_images`: `images` (uint8 [batch, H, W, 3], RGB) -> `embedding`.

Decoding (the one decode policy, `tfface.inference.decode.decode_image_tf`:
the same pixels as OpenCV), resizing, the model's own input normalization and
the optional flip test-time augmentation all live in the graph, so a client
sends raw image files and nothing else. A third, non-signature function
`raw_embedding` (uint8 images -> un-normalized embeddings) lets tfface's own
tools run the verification protocol (XNorm, flip sum) on an export.

The metadata asset carries the decision threshold of the embedding form
`serving_default` serves (see `tfface.export.metadata`).
"""
import contextlib
import json
import logging
import os
import shutil
import tempfile

from tfface.export import metadata as metadata_lib
from tfface.inference import decode
from tfface.inference import embedding as embedding_lib
from tfface.inference import loading


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

  @tf.function(input_signature=[images_spec])
  def raw_embedding(images):
    return embedding_lib.raw_embedding_tf(model, images)

  @tf.function(input_signature=[images_spec])
  def serve_images(images):
    return {"embedding": embedding_lib.embedding_tf(model, images, flip_tta)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
  def serve_bytes(image_bytes):
    images = tf.map_fn(lambda b: decode.decode_and_resize_tf(b, image_size), image_bytes,
                       fn_output_signature=tf.TensorSpec([*image_size, 3], tf.uint8))
    return {"embedding": embedding_lib.embedding_tf(model, images, flip_tta)}

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


def _float32_policies(config):
  """`config` with every mixed dtype policy replaced by float32, and whether any was.

  Keras 3 serializes a layer's policy as a `DTypePolicy` config (`{"name":
  "mixed_bfloat16"}`) under its `dtype` key; older files may hold the name.
  """
  if isinstance(config, dict):
    if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
      name = (config.get("config") or {}).get("name", "")
      if isinstance(name, str) and name.startswith("mixed_"):
        return dict(config, config=dict(config["config"], name="float32")), True
    changed, out = False, {}
    for key, value in config.items():
      if key == "dtype" and isinstance(value, str) and value.startswith("mixed_"):
        out[key], found = "float32", True
      else:
        out[key], found = _float32_policies(value)
      changed = changed or found
    return out, changed
  if isinstance(config, (list, tuple)):
    items = [_float32_policies(value) for value in config]
    return type(config)(v for v, _ in items), any(found for _, found in items)
  return config, False


def as_float32(model):
  """The backbone computing in float32: `model` itself unless it has mixed layers.

  A backbone trained with mixed precision keeps its variables in float32 but
  computes in bfloat16/float16, which TFLite and onnxruntime reject and which
  shifts embeddings by ~1e-3; every export rebuilds it with a float32 policy
  on each layer and the same (exactly carried over) weights.

  Raises:
    ValueError: a mixed-precision model that cannot be rebuilt from its config.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tfface.models  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  try:
    config = model.get_config()
  except NotImplementedError:
    config = None
  config, mixed = _float32_policies(config)
  if not mixed:
    if any(getattr(layer, "compute_dtype", "float32") != "float32"
           for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)):
      raise ValueError(f"{model.name}: computes in mixed precision and has no "
                       "config to rebuild it in float32 from")
    return model
  try:
    rebuilt = model.__class__.from_config(config)
    rebuilt.set_weights(model.get_weights())
  except (ValueError, TypeError) as e:
    raise ValueError(f"{model.name}: cannot rebuild the mixed-precision model in "
                     f"float32 ({e})") from e
  return rebuilt


def resolve_model(model_or_path):
  """A float32 Keras backbone, what loading it found (a workdir's verification), and its path.

  Every export goes through here; a mixed-precision backbone comes back
  rebuilt in float32 (`as_float32`).

  Args:
    model_or_path: a Keras model, or a `.keras` file / training workdir.

  Returns:
    `(keras_model, metadata, source_path)`.

  Raises:
    ValueError: the path is a SavedModel export or not loadable.
  """
  if not isinstance(model_or_path, (str, os.PathLike)):
    return as_float32(model_or_path), {}, ""
  loaded = loading.load_embedding_model(model_or_path)
  if loaded.keras_model is None:
    raise ValueError(f"{model_or_path}: already a SavedModel export; export the "
                     ".keras file or training workdir it came from instead")
  return as_float32(loaded.keras_model), loaded.metadata, os.fspath(model_or_path)


def _check_version(export_dir, version, overwrite):
  """The version directory to write, after checking the number and overwriting."""
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
  return version, target


def export_saved_model(model_or_path, export_dir, version, flip_tta=False,
                       overwrite=False, metadata=None, threshold=None,
                       threshold_bin=None, verbose=True):
  """Exports a backbone for TF Serving as `export_dir/version`.

  Args:
    model_or_path: a Keras backbone, or a `.keras` file / training workdir.
    export_dir: the model base directory TF Serving watches (`BASE/NAME`).
    version: positive integer version (the subdirectory name).
    flip_tta: embed the horizontal flip too and add it before normalizing.
    overwrite: replace an existing version instead of refusing.
    metadata: extra entries for `assets/tfface_metadata.json`.
    threshold: the squared-distance threshold to store for the served
      embedding, instead of measuring one.
    threshold_bin: a verification `.bin` to measure the served embedding's
      threshold on (default: a training workdir's verification target).
    verbose: show the threshold measurement's progress on stderr.

  Returns:
    The path of the written version directory.

  Raises:
    ValueError: bad version, an existing version without `overwrite`, a
      model that cannot be loaded, or a threshold that cannot be measured.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  version, target = _check_version(export_dir, version, overwrite)
  model, known, source = resolve_model(model_or_path)
  info = metadata_lib.export_metadata(model, source, known, flip_tta, threshold,
                                      threshold_bin, metadata, verbose)
  module, signatures = build_serving_module(model, flip_tta)
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
