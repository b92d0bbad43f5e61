"""Partial FC: the margin head sharded by class over the replicas, sampled per step.

arcface_torch's PartialFC V2 ("Killing Two Birds with One Stone", CVPR 2022)
in TensorFlow: each replica holds `1/R` of the class centres and their
momentum on its own device, each step uses the batch's positive classes
plus random negatives up to `sample_rate` of its shard, and the softmax over
all classes is computed exactly across the shards. See docs/distributed.md.

* `PartialFC` (`head`): variables, the per-replica loss, the update,
  checkpoints.
* `sharding`: which replica owns which classes; the argument checks.
* `sampling`: the per-step choice of centres.
* `checkpoint`: shard files, re-sharded reads, `latest_complete_step`,
  `prune`, `read_kernel`.
"""
from tfface.training.partial_fc.checkpoint import latest_complete_step
from tfface.training.partial_fc.checkpoint import prune
from tfface.training.partial_fc.checkpoint import read_kernel
from tfface.training.partial_fc.head import PartialFC
from tfface.training.partial_fc.sharding import shard_ranges

__all__ = ["PartialFC", "latest_complete_step", "prune", "read_kernel", "shard_ranges"]
