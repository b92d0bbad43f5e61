"""The combined angular margin `s * (cos(m1 * theta + m2) - m3)` on target logits.

ArcFace is (m1, m2, m3) = (1, 0.5, 0), CosFace (1, 0, 0.35), SphereFace-style
margins use m1 > 1, and InsightFace's "combined" recipe is (1, 0.3, 0.2).
Only the target class of each example gets the margin; every other logit is
`s * cos`.

Numerics (all in float32, whatever the input dtype):

* theta comes from `atan2(sqrt(max(1 - cos^2, tiny)), cos)` of the cosine
  clipped to [-1, 1]. This is acos on [-1, 1], but its derivative stays
  finite at cos = +-1, where acos's is infinite and would turn the loss
  gradient into NaN.
* When `m1 * theta + m2 > pi` the angle has wrapped past pi and the logit
  would grow again as the sample gets worse. InsightFace then falls back to
  `cos(theta) - mm` with `th = cos(pi - m2)`, `mm = sin(pi - m2) * m2`
  (for m1 = 1 the test `cos(theta) > th` is the same as
  `theta + m2 < pi`); `m3` is still subtracted.
* `easy_margin=True` applies the margin only where `cos(theta) > 0` and
  leaves the other target logits at `s * cos(theta)`.
"""
import math

from keras import ops

# Floor under 1 - cos^2 before the square root; keeps d(sin)/d(cos) finite.
_SIN2_FLOOR = 1e-12


def _angle(cosine):
  """acos of a clipped cosine, via atan2 so the gradient is finite at +-1."""
  sine = ops.sqrt(ops.maximum(1.0 - ops.square(cosine), _SIN2_FLOOR))
  return ops.arctan2(sine, cosine)


def combined_margin_logits(cosine, labels, s=64.0, m1=1.0, m2=0.5, m3=0.0,
                           easy_margin=False):
  """Applies the combined margin to the target cosines and scales by `s`.

  Args:
    cosine: float tensor [batch, num_classes] of cosines between embeddings
      and class centres.
    labels: int tensor [batch] of target classes. A negative label (e.g. -1
      for "target not among these classes", as in Partial FC shards) gets
      no margin.
    s: scale applied to every logit.
    m1: multiplicative angular margin (1 = none).
    m2: additive angular margin (ArcFace).
    m3: additive cosine margin (CosFace).
    easy_margin: apply the margin only where the target cosine is positive.

  Returns:
    float32 tensor [batch, num_classes] of logits.
  """
  cosine = ops.clip(ops.cast(cosine, "float32"), -1.0, 1.0)
  labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
  num_classes = ops.shape(cosine)[-1]
  # Pick the target cosine per row; clamp negative labels for the gather,
  # their one-hot row is all zeros so they receive no margin below.
  index = ops.expand_dims(ops.maximum(labels, 0), -1)
  target = ops.squeeze(ops.take_along_axis(cosine, index, axis=-1), -1)

  if m1 == 1.0 and m2 == 0.0:
    margined = target  # pure CosFace: no angle needed at all
  else:
    theta = _angle(target)
    margined = ops.cos(m1 * theta + m2)
    mm = math.sin(math.pi - m2) * m2
    if m1 == 1.0:
      wrapped = target <= math.cos(math.pi - m2)  # InsightFace's `th` test
    else:
      wrapped = m1 * theta + m2 >= math.pi
    margined = ops.where(wrapped, target - mm, margined)
  margined = margined - m3
  if easy_margin:
    margined = ops.where(target > 0.0, margined, target)

  one_hot = ops.one_hot(labels, num_classes, dtype="float32")
  delta = ops.expand_dims(margined - target, -1)
  return s * (cosine + one_hot * delta)
