"""LResNet-E-IR ("iresnet"): the ResNet-IR backbones r18 ... r200 of InsightFace.

Layer names mirror arcface_torch's module tree one-to-one so that a weight
importer can walk both by structure:

| Keras layer                   | arcface_torch module          |
| ----------------------------- | ----------------------------- |
| `stem_conv`                   | `conv1`                       |
| `stem_bn`, `stem_prelu`       | `bn1`, `prelu`                |
| `stageS_unitU_bn1`            | `layer{S}.{U-1}.bn1`          |
| `stageS_unitU_conv1`          | `layer{S}.{U-1}.conv1`        |
| `stageS_unitU_bn2`            | `layer{S}.{U-1}.bn2`          |
| `stageS_unitU_prelu`          | `layer{S}.{U-1}.prelu`        |
| `stageS_unitU_conv2`          | `layer{S}.{U-1}.conv2`        |
| `stageS_unitU_bn3`            | `layer{S}.{U-1}.bn3`          |
| `stageS_unit1_shortcut_conv`  | `layer{S}.0.downsample.0`     |
| `stageS_unit1_shortcut_bn`    | `layer{S}.0.downsample.1`     |
| `head_bn`                     | `bn2`                         |
| `head_fc`                     | `fc`                          |
| `head_features`               | `features` (BN, no gamma)     |

Stages and units count from 1. Every 3x3 conv is preceded by a
`..._pad` ZeroPadding2D layer. `head_flatten` flattens the 7x7x512 map in
NHWC order (index `(h * 7 + w) * 512 + c`), whereas PyTorch flattens NCHW
(`c * 49 + h * 7 + w`): importing `fc.weight` needs that permutation.
"""
import keras

from tfface.models import layers as blocks

# Units per stage, arcface_torch's table (MXNet's r200 was (3, 24, 36, 3)).
IRESNET_UNITS = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}
IRESNET_WIDTHS = (64, 128, 256, 512)
IRESNET_STEM_WIDTH = 64


def _ir_unit(x, factory, width, strides, name):
  """One IR unit: BN-Conv-BN-PReLU-Conv(stride)-BN plus shortcut, no final act."""
  shortcut = x
  # The first unit of a stage changes resolution (and usually width), so
  # its shortcut is a strided 1x1 conv + BN; later units add the identity.
  if strides != 1 or x.shape[-1] != width:
    shortcut = factory.conv(x, width, 1, f"{name}_shortcut_conv", strides=strides)
    shortcut = factory.bn(shortcut, f"{name}_shortcut_bn")
  y = factory.bn(x, f"{name}_bn1")
  y = factory.conv(y, width, 3, f"{name}_conv1", padding=1)
  y = factory.bn(y, f"{name}_bn2")
  y = factory.prelu(y, f"{name}_prelu")
  y = factory.conv(y, width, 3, f"{name}_conv2", strides=strides, padding=1)
  y = factory.bn(y, f"{name}_bn3")
  return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def iresnet(units, embedding_size=512, input_shape=(112, 112, 3), dropout=0.0,
            widths=IRESNET_WIDTHS, stem_width=IRESNET_STEM_WIDTH,
            bn_momentum=0.9, bn_epsilon=1e-5, input_mean=127.5, input_std=128.0,
            name="iresnet"):
  """Builds an LResNet-E-IR backbone mapping RGB pixels to embeddings.

  Args:
    units: four ints, IR units per stage (see `IRESNET_UNITS`).
    embedding_size: width of the output embedding.
    input_shape: (height, width, 3) of the input images.
    dropout: dropout rate of the "E" head (arcface_torch 0, MXNet 0.4).
    widths: four ints, channels of each stage.
    stem_width: channels of the stem conv.
    bn_momentum: Keras BatchNorm momentum (0.9 = PyTorch's 0.1).
    bn_epsilon: BatchNorm epsilon; 1e-5 as arcface_torch (MXNet used 2e-5).
    input_mean: subtracted from the raw pixels.
    input_std: divides the centred pixels; 128 (MXNet) or 127.5 (torch).
    name: model name.

  Returns:
    A functional `keras.Model` from images [B, H, W, 3] to float32
    embeddings [B, embedding_size] (raw, not L2-normalized).

  Raises:
    ValueError: if `units` or `widths` do not have four entries.
  """
  units, widths = tuple(units), tuple(widths)
  if len(units) != 4 or len(widths) != 4 or min(units) < 1:
    raise ValueError("iresnet needs four stages of >= 1 unit. Received: "
                     f"units={units}, widths={widths}")
  factory = blocks.BlockFactory(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
  images = keras.Input(shape=input_shape, name="images")
  x = blocks.InputNormalization(input_mean, input_std, name="normalize")(images)
  x = factory.conv(x, stem_width, 3, "stem_conv", padding=1)
  x = factory.bn(x, "stem_bn")
  x = factory.prelu(x, "stem_prelu")
  for stage, (num_units, width) in enumerate(zip(units, widths), start=1):
    for unit in range(1, num_units + 1):
      x = _ir_unit(x, factory, width, 2 if unit == 1 else 1,
                   f"stage{stage}_unit{unit}")
  # "E" output head: BN, dropout, flatten, FC, BN with fixed gamma.
  x = factory.bn(x, "head_bn")
  x = keras.layers.Dropout(dropout, name="head_dropout")(x)
  x = keras.layers.Flatten(name="head_flatten")(x)
  embeddings = blocks.embedding_output(x, factory, embedding_size, scale=False)
  return keras.Model(images, embeddings, name=name)
