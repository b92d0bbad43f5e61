"""Building blocks shared by the backbones: input normalization, conv, BN, PReLU.

The helpers here are functional (they take a Keras tensor and return one) so
that every backbone names its layers the same way:

* `NAME_pad` + `NAME`: explicit `ZeroPadding2D` followed by a VALID conv.
  PyTorch and MXNet pad 3x3 stride-2 convolutions by one pixel on every
  side, while TF's 'SAME' pads 0 before and 1 after; explicit padding keeps
  ported weights exact.
* `NAME` for BatchNormalization and PReLU layers.

Initializers follow MXNet's InsightFace symbols (Xavier gaussian, factor
"out", magnitude 2, i.e. He-normal over fan-out) for convolutions and 0.25
for PReLU slopes, as in both references.
"""
import dataclasses

import keras
from keras import ops

_PRELU_INIT = 0.25


def conv_initializer():
  """Returns a fresh He-normal (fan-out) initializer for conv kernels.

  Untruncated, as MXNet's `Xavier('gaussian', 'out', 2)`.
  """
  return keras.initializers.VarianceScaling(
      scale=2.0, mode="fan_out", distribution="untruncated_normal")


@keras.saving.register_keras_serializable(package="tfface")
class InputNormalization(keras.layers.Layer):
  """Maps raw RGB pixels (uint8 or float, 0-255) to `(x - mean) / std`.

  MXNet InsightFace models use mean 127.5 and std 128 (`* 0.0078125`);
  arcface_torch trains with std 127.5. The arithmetic runs in float32 and
  the result is cast to the layer's compute dtype, so integer input works
  under every dtype policy.

  Args:
    mean: value subtracted from every pixel.
    std: divisor applied after the subtraction; must be positive.
    **kwargs: standard `keras.layers.Layer` arguments.

  Raises:
    ValueError: if `std` is not positive.
  """

  def __init__(self, mean=127.5, std=128.0, **kwargs):
    # No autocast: float pixels reach `call` unrounded (bfloat16 would round
    # e.g. 200.3 to 200) and are cast only after normalization.
    kwargs.pop("autocast", None)
    super().__init__(autocast=False, **kwargs)
    if std <= 0:
      raise ValueError(f"InputNormalization std must be > 0. Received: std={std}")
    self.mean = float(mean)
    self.std = float(std)

  def call(self, inputs):
    x = ops.cast(inputs, "float32")
    x = (x - self.mean) / self.std
    return ops.cast(x, self.compute_dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({"mean": self.mean, "std": self.std})
    return config


@keras.saving.register_keras_serializable(package="tfface")
class GroupedConv2D(keras.layers.Conv2D):
  """`Conv2D` with `groups > 1`, computed as a depthwise conv plus a group sum.

  The kernel keeps Conv2D's layout `(kh, kw, in / groups, out)`, so weights
  load as for any Conv2D. TensorFlow's CPU gradient of grouped convolutions
  is pathologically slow (a 32x56x56x128 conv in 64 groups did not finish
  one backward pass in 10 minutes); a depthwise conv with multiplier
  `out / groups` followed by summing the `in / groups` partial outputs of
  each group is the same linear map and fast everywhere (and exports to
  TFLite/ONNX as ordinary ops).
  """

  def convolution_op(self, inputs, kernel):
    kh, kw, per_group_in, out = kernel.shape
    groups = self.groups
    per_group_out = out // groups
    # kernel[., ., i, g * M + j] -> depthwise[., ., g * I + i, j]
    k = ops.reshape(kernel, (kh, kw, per_group_in, groups, per_group_out))
    k = ops.transpose(k, (0, 1, 3, 2, 4))
    k = ops.reshape(k, (kh, kw, groups * per_group_in, per_group_out))
    y = ops.depthwise_conv(inputs, k, strides=self.strides, padding=self.padding,
                           data_format=self.data_format,
                           dilation_rate=self.dilation_rate)
    # Depthwise output channel (g * I + i) * M + j: sum over i per group.
    shape = ops.shape(y)
    y = ops.reshape(y, (shape[0], shape[1], shape[2], groups, per_group_in,
                        per_group_out))
    return ops.reshape(ops.sum(y, axis=4), (shape[0], shape[1], shape[2], out))


@dataclasses.dataclass(frozen=True)
class BlockFactory:
  """Creates consistently configured conv / BN / PReLU layers for a backbone.

  Attributes:
    bn_momentum: BatchNormalization momentum in the Keras convention (weight
      of the old moving average): 0.9 equals PyTorch's 0.1 and MXNet's 0.9.
    bn_epsilon: BatchNormalization epsilon (arcface_torch 1e-5, MXNet 2e-5).
  """

  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  def conv(self, x, filters, kernel_size, name, strides=1, padding=0, groups=1):
    """Bias-free conv after an optional explicit zero padding (`NAME_pad`)."""
    if padding:
      x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    conv_class = GroupedConv2D if groups > 1 else keras.layers.Conv2D
    return conv_class(
        filters, kernel_size, strides=strides, padding="valid", groups=groups,
        use_bias=False, kernel_initializer=conv_initializer(), name=name)(x)

  def depthwise(self, x, kernel_size, name, strides=1, padding=0):
    """Bias-free depthwise conv (multiplier 1) after optional zero padding."""
    if padding:
      x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return keras.layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="valid", use_bias=False,
        depthwise_initializer=conv_initializer(), name=name)(x)

  def grouped(self, x, filters, kernel_size, name, strides=1, padding=0,
              groups=1):
    """Depthwise conv when every group is one channel in and out, else grouped."""
    if groups == filters == x.shape[-1]:
      return self.depthwise(x, kernel_size, name, strides, padding)
    return self.conv(x, filters, kernel_size, name, strides, padding, groups)

  def bn(self, x, name, scale=True, dtype=None):
    """BatchNormalization; `scale=False` is MXNet's `fix_gamma=True`."""
    return keras.layers.BatchNormalization(
        momentum=self.bn_momentum, epsilon=self.bn_epsilon, scale=scale,
        dtype=dtype, name=name)(x)

  def prelu(self, x, name):
    """Per-channel PReLU (one slope per channel, shared over H and W)."""
    return keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(_PRELU_INIT),
        shared_axes=[1, 2], name=name)(x)

  def conv_bn_prelu(self, x, filters, kernel_size, name, strides=1, padding=0,
                    groups=1, activation=True):
    """`NAME_conv` -> `NAME_bn` (-> `NAME_prelu`), the MobileNet-style unit."""
    x = self.grouped(x, filters, kernel_size, f"{name}_conv", strides, padding,
                     groups)
    x = self.bn(x, f"{name}_bn")
    return self.prelu(x, f"{name}_prelu") if activation else x


def embedding_output(x, factory, embedding_size, scale, use_bias=True,
                     name_prefix="head"):
  """The shared tail: `head_fc` -> `head_features` BatchNorm.

  Both layers run in float32 whatever the global policy (arcface_torch also
  leaves its fp16 autocast before the FC), so the embedding is float32.

  Args:
    x: flattened features.
    factory: the backbone's `BlockFactory`.
    embedding_size: width of the embedding.
    scale: whether the last BatchNorm learns gamma (False for the iresnet
      "E" and MXNet GAP heads, True for MobileFaceNet's GDC).
    name_prefix: layer-name prefix.

  Returns:
    The float32 embedding tensor.
  """
  x = keras.layers.Dense(
      embedding_size, use_bias=use_bias, dtype="float32",
      kernel_initializer="glorot_normal", name=f"{name_prefix}_fc")(x)
  return factory.bn(x, f"{name_prefix}_features", scale=scale, dtype="float32")
