"""Identity-balanced batches (P identities x K images) for triplet training.

Triplet mining needs positives in every batch: InsightFace's triplet recipe
draws K = 5 images of each of P identities. TFRecord shards have no random
access, so the sampler works on the (globally shuffled) record stream:
`tf.data.Dataset.group_by_window` keeps one open window per identity and
emits it as soon as it holds K records, so consecutive groups of K records
share a label and a batch of P * K records holds P identities.

It runs on the undecoded records, so an open window costs K - 1 JPEGs
(a few KB each): for MS1MV2's 85,742 identities at most about 2 GB, usually
half that. Identities with fewer than K images in a pass never fill a window
and are left out of that pass.
"""
import tensorflow as tf


def check_batch(batch_size: int, images_per_identity: int):
  """Raises ValueError unless `batch_size` is a multiple of `images_per_identity`."""
  if images_per_identity < 2:
    raise ValueError("triplet batches need images_per_identity >= 2 (an anchor and "
                     f"a positive); got {images_per_identity}")
  if batch_size % images_per_identity:
    raise ValueError(f"batch size {batch_size} is not a multiple of "
                     f"images_per_identity={images_per_identity} (P identities x K images)")


def identity_balanced(records, images_per_identity):
  """Regroups a record stream into consecutive runs of K records of one identity.

  Args:
    records: dataset of dicts with at least an int `label` (and the undecoded
      image), one record per element.
    images_per_identity: K, the records per identity group.

  Returns:
    A dataset of the same elements in which elements `[i*K, (i+1)*K)` share
    a label; batching it by P*K gives P identities per batch.
  """
  k = int(images_per_identity)
  if k < 2:
    raise ValueError(f"images_per_identity must be >= 2; got {images_per_identity}")

  def to_group(unused_key, window):
    # A window that ended short (end of a finite stream) is dropped, so
    # groups stay exactly K long.
    return window.batch(k, drop_remainder=True)

  def identity(record):
    return tf.cast(record["label"], tf.int64)

  groups = records.group_by_window(key_func=identity, reduce_func=to_group, window_size=k)
  return groups.unbatch()
