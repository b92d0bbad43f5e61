"""Per-step choice of the class centres a shard uses (arcface_torch PartialFC V2).

Every positive class of the global batch that the shard owns is kept, and
uniformly random other classes fill the sample up to `num_sample` centres
(more when the positives alone exceed it). The draw is a stateless function
of its seed, so a resumed run samples exactly what an uninterrupted one did.

Shapes are static, as XLA wants them: the sample always has
`min(num_local, max(num_sample, batch))` slots, the first `max(num_sample,
positives)` of which are used; `valid` marks them and the loss masks the
rest out of the softmax (they get no gradient).
"""
import collections

import tensorflow as tf

Sample = collections.namedtuple("Sample", ["indices", "valid", "columns"])
Sample.__doc__ = """A shard's sample for one step.

Attributes:
  indices: int32 [S] local class indices (distinct); when S exceeds the
    centres used, these come first, positives before negatives.
  valid: bool [S], True for the centres the step uses.
  columns: int32 [B] column of each example's class in `indices`, -1 for
    examples whose class another shard owns.
"""


def sample_slots(num_local: int, num_sample: int, global_batch: int) -> int:
  """Static width S of a sample: room for `num_sample` or for every positive."""
  return min(int(num_local), max(int(num_sample), int(global_batch)))


def sample_classes(local_labels, num_local: int, num_sample: int, seed) -> Sample:
  """Samples the centres of one shard for one step.

  Args:
    local_labels: int32 [B] labels of the global batch relative to the
      shard's first class; -1 where another shard owns the class.
    num_local: classes the shard owns.
    num_sample: centres to use when the positives are fewer.
    seed: int [2] stateless seed (from the run seed, the step and the replica).

  Returns:
    A `Sample`.
  """
  local_labels = tf.cast(tf.reshape(local_labels, [-1]), tf.int32)
  global_batch = local_labels.shape[0]
  if global_batch is None:
    raise ValueError("Partial FC needs a static global batch size (drop_remainder=True "
                     "batches) to give the sample a static shape")
  slots = sample_slots(num_local, num_sample, global_batch)
  owned = local_labels >= 0
  # Random scores in [0, 1), positives lifted to 2: the top `slots` scores
  # are every positive followed by random negatives (arcface_torch's rule).
  scores = tf.random.stateless_uniform([num_local], seed=seed, alg="philox")
  scores = tf.tensor_scatter_nd_max(
      scores, tf.where(owned, local_labels, 0)[:, None],
      tf.where(owned, 2.0, 0.0))  # max with 0 leaves unowned rows' slot 0 as is
  positives = tf.reduce_sum(tf.cast(scores > 1.5, tf.int32))
  # Order matters only when some slots stay unused (then the used ones come
  # first); an unsorted top-k is 1.4x faster (500k classes, k = 50k, CPU).
  indices = tf.math.top_k(scores, k=slots, sorted=slots > num_sample).indices
  valid = tf.range(slots) < tf.maximum(num_sample, positives)
  # Column of each class in the sample, found through the inverse map rather
  # than top_k's order among the equal positive scores.
  inverse = tf.tensor_scatter_nd_update(
      tf.fill([num_local], -1), indices[:, None], tf.range(slots))
  columns = tf.where(owned, tf.gather(inverse, tf.maximum(local_labels, 0)), -1)
  return Sample(indices=indices, valid=valid, columns=columns)


def step_seed(seed: int, step, replica: int):
  """Stateless seed of a replica's sample at `step`: a hash of (seed, step, replica).

  int32, as XLA requires of seeds; the run seed is taken modulo 2**31.
  """
  base = tf.stack([tf.constant(int(seed) % 2**31, tf.int32), tf.cast(step, tf.int32)])
  return tf.random.experimental.stateless_fold_in(
      base, tf.constant(int(replica), tf.int32), alg="philox")
