"""`m1`, InsightFace's "LMobileNet-GAP": MobileNet v1 adapted to 112x112 faces.

MXNet's `fmobilenet` with `net_input=1` (the "L" input: stride-1 first
conv) and `net_output='GAP'`:

* `stem`: Conv3x3/1 to 32 channels (x multiplier).
* `block1` ... `block13`: depthwise 3x3 (`blockK_dw_*`) then pointwise 1x1
  (`blockK_pw_*`), each conv bias-free + BatchNorm with fixed gamma
  (`fix_gamma=True`, i.e. `scale=False`) + PReLU. Depthwise stride 2 in
  blocks 2, 4, 6 and 12 (112 -> 56 -> 28 -> 14 -> 7); pointwise widths
  64, 128, 128, 256, 256, 512 x 6, 1024, 1024.
* GAP head: `head_bn` (learned gamma), `head_prelu`, `head_pool` (global
  average), `head_dropout`, `head_fc` (with bias), `head_features`
  (BatchNorm with fixed gamma).

MXNet names: `stem` = `conv_1`, `blockK_dw` = `conv_{K+1}_dw`, `blockK_pw` =
`conv_{K+1}`, `head_bn` = `bn1`, `head_fc` = `pre_fc1`, `head_features` =
`fc1`.
"""
import keras

from tfface.models import layers as blocks

# (pointwise width, depthwise stride) of MobileNet v1's 13 pairs, base 32.
M1_PAIRS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2),
            (1024, 1))
M1_STEM_WIDTH = 32


def _width(base, multiplier):
  """Scaled channel count; raises unless positive."""
  width = int(base * multiplier)
  if width < 1:
    raise ValueError(f"m1 multiplier={multiplier} leaves no channels of {base}")
  return width


def lmobilenet(embedding_size=512, input_shape=(112, 112, 3), dropout=0.0,
               multiplier=1.0, pairs=M1_PAIRS, bn_momentum=0.9, bn_epsilon=1e-5,
               input_mean=127.5, input_std=128.0, name="lmobilenet"):
  """Builds `m1` (LMobileNet-GAP) mapping RGB pixels to embeddings.

  Args:
    embedding_size: width of the output embedding.
    input_shape: (height, width, 3) of the input images.
    dropout: dropout rate before `head_fc` (MXNet's GAP head has none).
    multiplier: width multiplier (MXNet `net_multiplier`); every width is
      `int(base * multiplier)`.
    pairs: (pointwise width, depthwise stride) per depthwise/pointwise pair,
      before the multiplier; fewer pairs give test-size models.
    bn_momentum: Keras BatchNorm momentum (0.9 as MXNet's).
    bn_epsilon: BatchNorm epsilon (MXNet's fmobilenet used its default 1e-3
      in the body and 2e-5 in the head; one value is used here).
    input_mean: subtracted from the raw pixels.
    input_std: divides the centred pixels (MXNet: 128).
    name: model name.

  Returns:
    A functional `keras.Model` from images [B, H, W, 3] to float32
    embeddings [B, embedding_size].

  Raises:
    ValueError: if `pairs` is empty or the multiplier leaves no channels.
  """
  if not pairs:
    raise ValueError("m1 needs at least one depthwise/pointwise pair")
  factory = blocks.BlockFactory(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)

  def conv_unit(x, filters, kernel_size, name, strides=1, depthwise=False):
    pad = kernel_size // 2
    if depthwise:
      x = factory.depthwise(x, kernel_size, f"{name}_conv", strides, pad)
    else:
      x = factory.conv(x, filters, kernel_size, f"{name}_conv", strides, pad)
    x = factory.bn(x, f"{name}_bn", scale=False)
    return factory.prelu(x, f"{name}_prelu")

  images = keras.Input(shape=input_shape, name="images")
  x = blocks.InputNormalization(input_mean, input_std, name="normalize")(images)
  x = conv_unit(x, _width(M1_STEM_WIDTH, multiplier), 3, "stem")
  for k, (width, strides) in enumerate(pairs, start=1):
    x = conv_unit(x, None, 3, f"block{k}_dw", strides=strides, depthwise=True)
    x = conv_unit(x, _width(width, multiplier), 1, f"block{k}_pw")
  x = factory.bn(x, "head_bn")
  x = factory.prelu(x, "head_prelu")
  x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
  x = keras.layers.Dropout(dropout, name="head_dropout")(x)
  embeddings = blocks.embedding_output(x, factory, embedding_size, scale=False)
  return keras.Model(images, embeddings, name=name)
