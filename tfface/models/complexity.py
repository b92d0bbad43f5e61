"""Multiply-accumulate counts of a backbone, from its layers' shapes.

Counts convolutions (including grouped and depthwise) and dense layers, the
layers that dominate these networks; BatchNorm, PReLU and additions are
left out, as in the FLOP figures InsightFace publishes (which are 2 x MACs:
r50 12.6 GFLOPs = 6.3 G multiply-accumulates at 112x112).
"""
import math

import keras


def _spatial(shape):
  return math.prod(int(d) for d in shape[1:-1])


def layer_macs(layer):
  """Multiply-accumulates of one call of `layer` on a single example.

  Args:
    layer: a built Keras layer inside a functional model.

  Returns:
    The MAC count as an int (0 for layers that are not conv or dense).
  """
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    kh, kw, channels, mult = layer.kernel.shape
    return _spatial(layer.output.shape) * kh * kw * channels * mult
  if isinstance(layer, keras.layers.Conv2D):
    kh, kw, cin_per_group, cout = layer.kernel.shape
    return _spatial(layer.output.shape) * kh * kw * cin_per_group * cout
  if isinstance(layer, keras.layers.Dense):
    fan_in, units = layer.kernel.shape
    rows = math.prod(int(d) for d in layer.output.shape[1:-1]) or 1
    return rows * fan_in * units
  return 0


def count_macs(model):
  """Total multiply-accumulates of `model` for one input example.

  Args:
    model: a functional Keras model (e.g. from `build_backbone`).

  Returns:
    int, the sum of `layer_macs` over the model's layers.
  """
  return sum(layer_macs(layer) for layer in model.layers)
