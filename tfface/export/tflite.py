"""TFLite export of the `serve_images` signature (float32 or float16 weights).

Only the uint8-images signature is converted: JPEG/PNG decoding has no TFLite
builtin, and on-device callers already hold pixels. The converted model keeps
the signature name and keys: `serve_images`, input `images` (uint8
[batch, H, W, 3] RGB), output `embedding` (L2-normalized).
"""
import os
import tempfile
import warnings

from tfface import atomic
from tfface.export import saved_model


def export_tflite(model_or_path, output_path, float16=False, flip_tta=False):
  """Converts a backbone to a `.tflite` file with the `serve_images` signature.

  Args:
    model_or_path: a Keras backbone, or a `.keras` file / training workdir.
    output_path: the `.tflite` file to write (atomically).
    float16: store weights as float16 (half the size; about 1e-4 difference in
      the normalized embedding), computing in float32 on CPUs.
    flip_tta: embed the horizontal flip too, as in the SavedModel.

  Returns:
    `output_path`.

  Raises:
    ValueError: the model cannot be loaded or converted.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model, _, _ = saved_model.resolve_model(model_or_path)
  module, signatures = saved_model.build_serving_module(model, flip_tta)
  with tempfile.TemporaryDirectory() as staging:
    # Converting from a SavedModel keeps the signature's name and keys, which
    # `Interpreter.get_signature_runner("serve_images")` relies on.
    with saved_model.quiet_tensorflow_info():
      tf.saved_model.save(module, staging,
                          signatures={"serve_images": signatures["serve_images"]})
      converter = tf.lite.TFLiteConverter.from_saved_model(
          staging, signature_keys=["serve_images"])
      if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
      try:
        data = converter.convert()
      except Exception as e:  # the converter raises ConverterError and others
        raise ValueError(f"TFLite conversion failed for {model.name}: {e}") from e
  atomic.write_bytes(output_path, data, make_dirs=True)
  return output_path


def tflite_embed(path, images):
  """Runs a `.tflite` export on uint8 images; returns [n, D] embeddings."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    # TF points to ai_edge_litert, which tfface does not pin; the bundled
    # interpreter still runs the same flatbuffer in TF 2.21.
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
    interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
  runner = interpreter.get_signature_runner("serve_images")
  return np.asarray(runner(images=np.asarray(images, np.uint8))["embedding"])
