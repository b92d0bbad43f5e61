"""Triplet loss with online mining inside the batch (FaceNet / InsightFace triplet).

Distances are squared Euclidean distances between L2-normalized embeddings
(in [0, 4]), the quantity InsightFace's triplet fine-tuning puts the margin
alpha on. Two mining strategies:

* `batch_hard`: for each anchor, its farthest positive against its closest
  negative (Hermans et al., "In Defense of the Triplet Loss").
* `semi_hard`: for each anchor-positive pair, the closest negative that is
  still farther than the positive; if there is none, the farthest negative
  (FaceNet's rule, as in TF-Addons' `triplet_semihard_loss`). Builds a
  [batch, batch, batch] tensor, fine for the few hundred images per batch
  triplet fine-tuning uses.

Anchors (or pairs) without any positive or negative in the batch are left
out of the mean; a batch with none at all gives 0.
"""
from keras import ops

MINING = ("batch_hard", "semi_hard")


def _pairwise_squared_distances(x):
  """[B, B] squared distances, clamped at 0 against rounding."""
  sq = ops.sum(ops.square(x), axis=-1)
  d = ops.expand_dims(sq, 1) - 2.0 * ops.matmul(x, ops.transpose(x)) + sq
  return ops.maximum(d, 0.0)


def _masked_mean(values, mask):
  mask = ops.cast(mask, "float32")
  return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def triplet_loss(labels, embeddings, margin=0.35, mining="batch_hard"):
  """Mean hinge `max(d(a, p) - d(a, n) + margin, 0)` over mined triplets.

  See `triplet_loss_and_active` for the arguments; this returns the loss alone.
  """
  return triplet_loss_and_active(labels, embeddings, margin, mining)[0]


def triplet_loss_and_active(labels, embeddings, margin=0.35, mining="batch_hard"):
  """The triplet loss, and the fraction of mined triplets that are active.

  A triplet is active when its hinge is positive (it still violates the
  margin and gives a gradient): the measure of progress that triplet
  training logs instead of a classification accuracy.

  Args:
    labels: int tensor [batch] of identities.
    embeddings: float tensor [batch, dim]; L2-normalized here.
    margin: alpha, in squared-distance units (InsightFace uses 0.3-0.35).
    mining: `batch_hard` or `semi_hard`.

  Returns:
    `(loss, active)`: float32 scalars, the mean hinge over the mined
    triplets and the fraction of them with a positive hinge (0 for none).

  Raises:
    ValueError: for an unknown `mining`.
  """
  if mining not in MINING:
    raise ValueError(f"Unknown triplet mining {mining!r}; expected one of {MINING}")
  x = ops.cast(embeddings, "float32")
  x = x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), -1, keepdims=True), 1e-12))
  d = _pairwise_squared_distances(x)
  labels = ops.reshape(labels, (-1,))
  same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
  not_self = ops.logical_not(ops.eye(ops.shape(labels)[0], dtype="bool"))
  positive = ops.logical_and(same, not_self)
  negative = ops.logical_not(same)
  has_negative = ops.any(negative, axis=1)
  # Distances are <= 4 on the unit sphere, so 8 stands in for "no such pair".
  far = 8.0

  if mining == "batch_hard":
    hardest_positive = ops.max(ops.where(positive, d, 0.0), axis=1)
    hardest_negative = ops.min(ops.where(negative, d, far), axis=1)
    losses = ops.relu(hardest_positive - hardest_negative + margin)
    valid = ops.logical_and(ops.any(positive, axis=1), has_negative)
    return _masked_mean(losses, valid), _masked_mean(ops.cast(losses > 0.0, "float32"), valid)

  # semi_hard: index [a, p, n]; d_ap broadcast over n, d_an over p.
  d_ap = ops.expand_dims(d, 2)
  d_an = ops.expand_dims(d, 1)
  neg_an = ops.expand_dims(negative, 1)
  farther = ops.logical_and(neg_an, d_an > d_ap)
  semi_hard = ops.min(ops.where(farther, d_an, far), axis=2)
  farthest = ops.max(ops.where(negative, d, -far), axis=1, keepdims=True)
  chosen = ops.where(ops.any(farther, axis=2), semi_hard, farthest)
  losses = ops.relu(d - chosen + margin)
  valid = ops.logical_and(positive, ops.expand_dims(has_negative, 1))
  return _masked_mean(losses, valid), _masked_mean(ops.cast(losses > 0.0, "float32"), valid)
