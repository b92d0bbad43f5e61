"""Face-recognition backbones and training heads, looked up by the names users type.

Backbones (`build_backbone`): `r18`, `r34`, `r50`, `r100`, `r200`
(LResNet-E-IR, see `iresnet`), `mbf` / `y1` (MobileFaceNet, see
`mobilefacenet`) and `m1` (LMobileNet-GAP, see `mobilenet`). Heads
(`build_head`): `arcface`, `cosface`, `combined`, `softmax`.
"""
import functools

from tfface.models import complexity
from tfface.models import heads
from tfface.models import initializers
from tfface.models import iresnet
from tfface.models import layers
from tfface.models import mobilefacenet
from tfface.models import mobilenet
from tfface.models.heads import MarginHead
from tfface.models.heads import SoftmaxHead
from tfface.models.initializers import RowBlockNormal
from tfface.models.layers import GroupedConv2D
from tfface.models.layers import InputNormalization

_BACKBONES = {
    **{name: functools.partial(iresnet.iresnet, units=units)
       for name, units in iresnet.IRESNET_UNITS.items()},
    "mbf": mobilefacenet.mobilefacenet,
    "y1": mobilefacenet.mobilefacenet,
    "m1": mobilenet.lmobilenet,
}
BACKBONES = tuple(_BACKBONES)

# Margins (m1, m2, m3) of each margin head; s = 64 for all of them.
HEAD_MARGINS = {
    "arcface": {"m1": 1.0, "m2": 0.5, "m3": 0.0},
    "cosface": {"m1": 1.0, "m2": 0.0, "m3": 0.35},
    "combined": {"m1": 1.0, "m2": 0.3, "m3": 0.2},
}
HEADS = tuple(HEAD_MARGINS) + ("softmax",)


def build_backbone(name, embedding_size=512, input_shape=(112, 112, 3),
                   dropout=0.0, **overrides):
  """Builds a backbone mapping raw RGB pixels (0-255, NHWC) to embeddings.

  The model normalizes its input inside the graph ((x - 127.5) / 128 unless
  `input_std` says otherwise) and returns the raw float32 embedding, not
  L2-normalized, also under mixed precision.

  Overrides (keyword arguments passed to the family's builder):

  * every family: `input_mean` (127.5), `input_std` (128, MXNet; use 127.5
    for weights trained by arcface_torch), `bn_epsilon` (1e-5, as
    arcface_torch; MXNet used 2e-5), `bn_momentum` (0.9 in the Keras
    convention, i.e. PyTorch's 0.1).
  * r18 ... r200: `units` (4 ints, units per stage), `widths` (4 ints,
    default (64, 128, 256, 512)), `stem_width` (64).
  * mbf / y1: `blocks_per_stage` (4 ints, default (1, 4, 6, 2)), `scale`
    (2), `width_multiplier` (1.0).
  * m1: `multiplier` (1.0), `pairs` ((width, stride) per depthwise pair).

  Example, a test-size ResNet that trains in seconds on a CPU:

    build_backbone("r18", embedding_size=128, units=(1, 1, 1, 1),
                   widths=(16, 32, 64, 128), stem_width=16)

  Args:
    name: one of `BACKBONES` (r18, r34, r50, r100, r200, mbf, y1, m1).
    embedding_size: width of the embedding.
    input_shape: (height, width, channels) of the images.
    dropout: dropout rate before the embedding FC.
    **overrides: family-specific options listed above.

  Returns:
    A `keras.Model` named `name`.

  Raises:
    ValueError: for an unknown name or an override the family rejects.
  """
  key = str(name).lower()
  if key not in _BACKBONES:
    raise ValueError(f"Unknown backbone {name!r}; expected one of {list(BACKBONES)}")
  try:
    return _BACKBONES[key](embedding_size=embedding_size,
                           input_shape=tuple(input_shape), dropout=dropout,
                           name=key, **overrides)
  except TypeError as e:  # an override this family does not have
    raise ValueError(f"backbone {key!r}: {e}") from e


def build_head(loss, num_classes, embedding_size=None, **kwargs):
  """Builds the training head of a loss recipe.

  Args:
    loss: `arcface` (m2 = 0.5), `cosface` (m3 = 0.35), `combined`
      ((m1, m2, m3) = (1, 0.3, 0.2)) or `softmax` (FC with bias).
    num_classes: number of identities.
    embedding_size: embedding width; creates the weights immediately if given.
    **kwargs: for margin heads `s` (64), `m1`, `m2`, `m3`, `easy_margin`
      override the recipe's values; any layer argument (e.g. `name`).

  Returns:
    A float32 `MarginHead` or `SoftmaxHead`, called as `head(embeddings,
    labels)` for training logits and `head(embeddings)` for inference logits.

  Raises:
    ValueError: for an unknown loss name.
  """
  key = str(loss).lower()
  if key == "softmax":
    kwargs.setdefault("name", "softmax_head")
    return SoftmaxHead(num_classes, embedding_size=embedding_size, **kwargs)
  if key not in HEAD_MARGINS:
    raise ValueError(f"Unknown head/loss {loss!r}; expected one of {list(HEADS)}")
  options = dict(HEAD_MARGINS[key], **kwargs)
  options.setdefault("name", f"{key}_head")
  return MarginHead(num_classes, embedding_size=embedding_size, **options)


__all__ = ["build_backbone", "build_head", "BACKBONES", "HEADS", "MarginHead",
           "SoftmaxHead", "RowBlockNormal", "InputNormalization", "GroupedConv2D",
           "complexity", "heads", "initializers", "iresnet", "layers", "mobilefacenet",
           "mobilenet"]
