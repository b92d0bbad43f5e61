"""ONNX export of the `serve_images` function through tf2onnx (optional extra).

The graph takes `images` (uint8 [batch, H, W, 3] RGB) and returns `embedding`
(float32, L2-normalized), like the SavedModel's `serve_images` signature.
Install with `pip install 'tfface[onnx]'` (onnx, onnxruntime, tf2onnx).
"""
import contextlib
import logging
import os

from tfface import atomic
from tfface.export import saved_model

DEFAULT_OPSET = 17


def _require_tf2onnx():
  try:
    import tf2onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("ONNX export needs tf2onnx and onnx: pip install "
                     "'tfface[onnx]'") from e
  return tf2onnx


@contextlib.contextmanager
def _quiet_tf2onnx():
  """Raises tf2onnx's loggers to WARNING: its INFO lines (versions, opset,
  optimizer statistics) are noise in a tool's output; warnings still show."""
  logger = logging.getLogger("tf2onnx")
  previous = logger.level
  logger.setLevel(logging.WARNING)
  try:
    yield
  finally:
    logger.setLevel(previous)


def export_onnx(model_or_path, output_path, flip_tta=False, opset=DEFAULT_OPSET):
  """Converts a backbone to an `.onnx` file.

  Args:
    model_or_path: a Keras backbone, or a `.keras` file / training workdir.
    output_path: the `.onnx` file to write (atomically).
    flip_tta: embed the horizontal flip too, as in the SavedModel.
    opset: ONNX opset version.

  Returns:
    `output_path`.

  Raises:
    ValueError: tf2onnx is missing, or the conversion fails.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf2onnx = _require_tf2onnx()
  model, _, _ = saved_model.resolve_model(model_or_path)
  module, _ = saved_model.build_serving_module(model, flip_tta)
  spec = module.serve_images.input_signature
  try:
    with _quiet_tf2onnx():
      proto, _ = tf2onnx.convert.from_function(
          module.serve_images, input_signature=[tf.TensorSpec(spec[0].shape, tf.uint8,
                                                              name="images")],
          opset=opset)
  except Exception as e:  # tf2onnx raises many types on unsupported graphs
    raise ValueError(f"ONNX conversion failed for {model.name}: {e}") from e
  atomic.write_bytes(output_path, proto.SerializeToString(), make_dirs=True)
  return output_path


def onnx_embed(path, images):
  """Runs an `.onnx` export with onnxruntime on uint8 images; returns [n, D]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(os.fspath(path),
                                         providers=["CPUExecutionProvider"])
  return session.run(["embedding"], {"images": np.asarray(images, np.uint8)})[0]
