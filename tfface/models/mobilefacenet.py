"""MobileFaceNet as arcface_torch's `mbf` (MXNet's `y1` is its 128-d form).

Structure (112x112 input; widths for the default `scale=2`):

* `stem`: Conv3x3/2 to 128 channels -> 56x56, then `stem_dw`: a 3x3 conv
  in 64 groups (two channels per group, as arcface_torch) when
  `blocks[0] == 1`, otherwise `blocks[0]` residual bottlenecks `stage0_blockK`.
* three stages, each a strided bottleneck `stageS_down` (1x1 expand, 3x3
  depthwise stride 2, linear 1x1 project) followed by `blocks[S]` residual
  bottlenecks `stageS_blockK` (same, stride 1, plus identity):
  56 -> 28 -> 14 -> 7; outputs 128, 256, 256 channels; expansion widths
  128/128, 256/256, 512/256 (down/residual).
* `conv_sep`: 1x1 to 512 + BN + PReLU; GDC head: 7x7 depthwise `gdc_conv`
  + `gdc_bn`, `head_flatten`, `head_dropout`, `head_fc` (no bias),
  `head_features` (BatchNorm with gamma).

Each unit `NAME` has `NAME_conv`, `NAME_bn` and (except linear projections
and the GDC) `NAME_prelu`; bottlenecks use the sub-names `expand`, `dw`,
`project`. arcface_torch counterparts: `layers.0` = `stem`, `layers.1` =
`stem_dw` (or `stage0`), `layers.2/4/6` = `stage1/2/3_down`,
`layers.3/5/7.layers.K` = `stage1/2/3_block{K+1}`, `conv_sep`,
`features.layers.0` = `gdc`, `features.layers.2` = `head_fc`,
`features.layers.3` = `head_features`.
"""
import keras

from tfface.models import layers as blocks

MBF_BLOCKS = (1, 4, 6, 2)
MBF_SCALE = 2
# arcface_torch's literal group counts: stem depthwise groups, then the
# (down, residual) expansion widths of stages 0-3, then the conv_sep width.
_STEM_GROUPS = 64
_EXPANSIONS = ((None, 128), (128, 128), (256, 256), (512, 256))
_SEP_WIDTH = 512


def _bottleneck(x, factory, out_width, expansion, strides, name):
  """Expand 1x1 -> depthwise 3x3 -> linear 1x1; identity added if stride 1."""
  y = factory.conv_bn_prelu(x, expansion, 1, f"{name}_expand")
  y = factory.conv_bn_prelu(y, expansion, 3, f"{name}_dw", strides=strides,
                            padding=1, groups=expansion)
  y = factory.conv_bn_prelu(y, out_width, 1, f"{name}_project", activation=False)
  if strides == 1 and x.shape[-1] == out_width:
    y = keras.layers.Add(name=f"{name}_add")([x, y])
  return y


def _scaled(width, multiplier, what):
  """`width * multiplier` as an int; raises unless it is a positive integer."""
  scaled = width * multiplier
  if scaled < 1 or abs(scaled - round(scaled)) > 1e-6:
    raise ValueError(f"mobilefacenet width_multiplier={multiplier} makes {what} "
                     f"{width} a non-integer width {scaled}")
  return int(round(scaled))


def mobilefacenet(embedding_size=512, input_shape=(112, 112, 3), dropout=0.0,
                  blocks_per_stage=MBF_BLOCKS, scale=MBF_SCALE,
                  width_multiplier=1.0, bn_momentum=0.9, bn_epsilon=1e-5,
                  input_mean=127.5, input_std=128.0, name="mobilefacenet"):
  """Builds MobileFaceNet (arcface_torch `mbf`) mapping RGB pixels to embeddings.

  Args:
    embedding_size: width of the output embedding.
    input_shape: (height, width, 3) of the input images.
    dropout: dropout rate before `head_fc` (arcface_torch has none: 0).
    blocks_per_stage: four ints, residual bottlenecks of stages 0-3
      (arcface_torch `blocks`; `mbf_large` is (2, 8, 12, 4) with scale 4).
    scale: stage widths are 64 * scale and 128 * scale (arcface_torch).
    width_multiplier: multiplies every width, including arcface_torch's
      literal group/expansion widths; use e.g. 0.25 for test-size models.
    bn_momentum: Keras BatchNorm momentum (0.9 = PyTorch's 0.1).
    bn_epsilon: BatchNorm epsilon (arcface_torch 1e-5).
    input_mean: subtracted from the raw pixels.
    input_std: divides the centred pixels; 128 (MXNet) or 127.5 (torch).
    name: model name.

  Returns:
    A functional `keras.Model` from images [B, H, W, 3] to float32
    embeddings [B, embedding_size].

  Raises:
    ValueError: on a malformed `blocks_per_stage` or a multiplier that
      gives fractional widths.
  """
  blocks_per_stage = tuple(blocks_per_stage)
  if len(blocks_per_stage) != 4 or min(blocks_per_stage) < 1:
    raise ValueError("mobilefacenet needs four block counts >= 1. Received: "
                     f"blocks_per_stage={blocks_per_stage}")
  mult = width_multiplier
  stage_widths = [_scaled(w * scale, mult, "stage width") for w in (64, 64, 128, 128)]
  factory = blocks.BlockFactory(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)

  images = keras.Input(shape=input_shape, name="images")
  x = blocks.InputNormalization(input_mean, input_std, name="normalize")(images)
  x = factory.conv_bn_prelu(x, stage_widths[0], 3, "stem", strides=2, padding=1)
  if blocks_per_stage[0] == 1:
    x = factory.conv_bn_prelu(x, stage_widths[0], 3, "stem_dw", padding=1,
                              groups=_scaled(_STEM_GROUPS, mult, "stem groups"))
  for stage, (count, width, (down_exp, res_exp)) in enumerate(
      zip(blocks_per_stage, stage_widths, _EXPANSIONS)):
    if stage == 0 and count == 1:
      continue  # stage 0 is the single `stem_dw` conv above
    if down_exp is not None:
      x = _bottleneck(x, factory, width, _scaled(down_exp, mult, "expansion"),
                      2, f"stage{stage}_down")
    for k in range(1, count + 1):
      x = _bottleneck(x, factory, width, _scaled(res_exp, mult, "expansion"),
                      1, f"stage{stage}_block{k}")
  x = factory.conv_bn_prelu(x, _scaled(_SEP_WIDTH, mult, "conv_sep width"), 1,
                            "conv_sep")
  # GDC: a depthwise conv over the whole 7x7 map replaces global pooling.
  x = factory.depthwise(x, tuple(x.shape[1:3]), "gdc_conv")
  x = factory.bn(x, "gdc_bn")
  x = keras.layers.Flatten(name="head_flatten")(x)
  x = keras.layers.Dropout(dropout, name="head_dropout")(x)
  embeddings = blocks.embedding_output(x, factory, embedding_size, scale=True,
                                       use_bias=False)
  return keras.Model(images, embeddings, name=name)
