"""The combined angular margin `s * (cos(m1 * theta + m2) - m3)` on target logits.

ArcFace is (m1, m2, m3) = (1, 0.5, 0), CosFace (1, 0, 0.35), SphereFace-style
margins use m1 > 1, and InsightFace's "combined" recipe is (1, 0.3, 0.2).
Only the target class of each example gets the margin; every other logit is
`s * cos`.

Past pi the angle wraps and `cos(m1 * theta + m2)` would grow again as the
sample gets worse. The references differ in what they do there:

* InsightFace's MXNet combined margin has no fallback at all: it is the pure
  `cos(m1 * theta + m2) - m3`, non-monotonic wherever
  `m1 * theta + m2 > pi` can happen.
* arcface_torch's ArcFace (m1 = 1) uses `th = cos(pi - m2)`,
  `mm = sin(pi - m2) * m2`: where `cos(theta) <= th` (`theta + m2 >= pi`) the
  target becomes `cos(theta) - mm`. tfface does the same for m1 = 1 (then
  subtracts m3).
* For m1 != 1 tfface uses SphereFace's monotonic extension on the angle
  `phi = m1 * theta + m2`: `psi = (-1)^k cos(phi) - 2k` with
  `k = floor(phi / pi)`, continuous and decreasing over the whole range
  (SphereFace, Liu et al. 2017, eq. 6, there with m2 = 0); then m3.

Numerics (all in float32, whatever the input dtype):

* theta comes from `atan2(sqrt(max(1 - cos^2, tiny)), cos)` of the cosine
  clipped to [-1, 1]. This is acos on [-1, 1], but its derivative stays
  finite at cos = +-1, where acos's is infinite and would turn the loss
  gradient into NaN.
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


def _monotonic_cos(phi):
  """SphereFace's psi(phi) = (-1)^k cos(phi) - 2k, k = floor(phi / pi)."""
  k = ops.floor(phi / math.pi)
  sign = 1.0 - 2.0 * (k - 2.0 * ops.floor(k / 2.0))  # (-1)^k for integer-valued k
  return sign * ops.cos(phi) - 2.0 * k


def target_margin(target, m1=1.0, m2=0.5, m3=0.0, easy_margin=False):
  """The margin-adjusted target cosine (before the scale `s`).

  Args:
    target: float32 tensor of target-class cosines, clipped to [-1, 1].
    m1: multiplicative angular margin (1 = none).
    m2: additive angular margin (ArcFace).
    m3: additive cosine margin (CosFace).
    easy_margin: apply the margin only where the target cosine is positive.

  Returns:
    float32 tensor shaped like `target`.
  """
  if m1 == 1.0 and m2 == 0.0:
    margined = target  # pure CosFace: no angle needed at all
  elif m1 == 1.0:
    theta = _angle(target)
    mm = math.sin(math.pi - m2) * m2
    wrapped = target <= math.cos(math.pi - m2)  # arcface_torch's `th` test
    margined = ops.where(wrapped, target - mm, ops.cos(theta + m2))
  else:
    margined = _monotonic_cos(m1 * _angle(target) + m2)
  margined = margined - m3
  if easy_margin:
    margined = ops.where(target > 0.0, margined, target)
  return margined


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
  margined = target_margin(target, m1, m2, m3, easy_margin)
  one_hot = ops.one_hot(labels, num_classes, dtype="float32")
  delta = ops.expand_dims(margined - target, -1)
  return s * (cosine + one_hot * delta)
