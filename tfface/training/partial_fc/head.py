"""`PartialFC`: class centres sharded over the replicas, sampled per step.

The margin head's `[C, D]` kernel is split by class over the R replicas in
sync (`sharding.shard_ranges`). A replica's rows and their momentum are
plain variables on its own device: never mirrored, never all-reduced. Only
the backbone stays mirrored.

One step on replica r (`replica_loss`, inside `strategy.run`):

1. all-gather the global batch's float32 embeddings and labels;
2. cosines against the shard's sampled centres (`sampling`), the margin on
   the positives the shard owns;
3. the softmax cross-entropy over all C classes, exact across shards: the
   row maximum (all-gathered local maxima, no gradient), the sum of
   exponentials and the target logit (from its owner) all-reduced.

Every replica then holds the same mean loss L of the global batch and
returns `L / R`, so the shares sum to L. The gradients come out exact by
TensorFlow's own collective gradients: the all-reduce's gradient is the
all-reduce of the replicas' upstream gradients (R copies of `dL/R`, summed:
`dL`), so each shard's logits receive the full-softmax gradient; the
all-gather's gradient all-reduces the replicas' embedding gradients and
hands each replica its own rows, which is `dL/dx` for the backbone's
replica-local backward pass.

The update (`apply_gradients`) is arcface_torch V2's single SGD over the
whole shard parameter, in Keras's momentum form and with coupled weight
decay: `g = grad + wd * w; m = momentum * m - lr * g; w += m` on every row,
sampled or not (unsampled rows: gradient 0, so decay and momentum only).
"""
import dataclasses

import numpy as np
import tensorflow as tf
# Plain single-device variables inside a strategy scope need the creator
# hook TensorFlow itself uses for them (numpy input datasets); there is no
# public equivalent.
from tensorflow.python.distribute import numpy_dataset  # pylint: disable=g-direct-tensorflow-import

from tfface.losses import margin as margin_lib
from tfface.models import heads
from tfface.models.initializers import RowBlockNormal
from tfface.training.partial_fc import checkpoint
from tfface.training.partial_fc import sampling
from tfface.training.partial_fc import sharding

# Added to the logits of the sample slots a step leaves unused: exp() of the
# sum is 0 and it never wins an argmax, yet it stays finite (no inf - inf,
# no 0 * inf in the gradient).
_MASKED_LOGIT = -1e30
# Rows of centres drawn and assigned at a time when a shard is initialized.
_INIT_ROWS = 65536


@dataclasses.dataclass
class Shard:
  """The classes `[start, stop)` of global replica `replica`, held on `device`."""

  replica: int
  start: int
  stop: int
  device: str
  num_sample: int
  kernel: tf.Variable
  momentum: tf.Variable

  @property
  def size(self) -> int:
    return self.stop - self.start


def _device_variable(strategy, device, initial_value, name, trainable):
  """A plain (not mirrored) variable on `device`, whatever scope the caller is in."""

  def single_device(next_creator, **kwargs):
    kwargs["colocate_with"] = numpy_dataset.SingleDevice(device)
    return next_creator(**kwargs)

  with strategy.scope(), tf.variable_creator_scope(single_device):
    return tf.Variable(initial_value, name=name, trainable=trainable)


def _local_replica_ids(strategy):
  """Global replica ids of this worker's devices, in `worker_devices` order."""
  ids = tf.function(lambda: strategy.run(
      lambda: tf.distribute.get_replica_context().replica_id_in_sync_group))()
  return [int(t) for t in strategy.experimental_local_results(ids)]


# XLA fuses the update into one in-place pass over the shard: measured on a
# [500000, 128] shard, 0.09 s and no shard-sized temporary, against 0.23 s
# and 1.4 shards of temporaries for the same ops run one by one.
@tf.function(jit_compile=True)
def _sgd_update(kernel, momentum, grad, indices, learning_rate, momentum_coef, weight_decay):
  """`g = grad + wd * w; m = momentum * m - lr * g; w += m` over the whole shard.

  `grad` is dense, or the values of the rows `indices` (rows sharing an
  index add up, as in `tf.IndexedSlices`).
  """
  total = weight_decay * kernel.read_value()
  if indices is None:
    total += grad
  else:
    total = tf.tensor_scatter_nd_add(total, indices[:, None], grad)
  tf.raw_ops.ResourceApplyKerasMomentum(
      var=kernel.handle, accum=momentum.handle, lr=learning_rate, grad=total,
      momentum=tf.constant(momentum_coef, tf.float32), use_nesterov=False)


class PartialFC:
  """The margin head sharded by class over the replicas, with its own SGD.

  Construct it once, in or out of `strategy.scope()`; call `replica_loss`,
  `shard_variable` and `apply_gradients` inside `strategy.run`.

  Args:
    strategy: a MirroredStrategy, MultiWorkerMirroredStrategy or
      OneDeviceStrategy.
    num_classes: identities C (at least the number of replicas).
    embedding_size: embedding width D.
    sample_rate: fraction of each shard's centres a step uses, in (0, 1];
      1.0 uses every centre (model parallelism without sampling).
    s, m1, m2, m3, easy_margin: the combined margin, as in `MarginHead`.
    initializer: a `RowBlockNormal`; the shards start as the rows of the
      `[C, D]` matrix it draws (the replicated head's for the same seed).
    momentum: SGD momentum (Keras form).
    weight_decay: coupled weight decay of the centres.
    seed: seed of the per-step sampling.

  Raises:
    ValueError: num_classes smaller than the replica count, sample_rate
      outside (0, 1], or an initializer without `rows`.

  Example:
    >>> pfc = PartialFC(strategy, 2_059_906, 512, sample_rate=0.1)
    >>> def replica_step(images, labels):
    ...   with tf.GradientTape() as tape:
    ...     loss, accuracy = pfc.replica_loss(backbone(images), labels, step)
    ...   *g_backbone, g_head = tape.gradient(loss, backbone_vars + [pfc.shard_variable()])
    ...   optimizer.apply(g_backbone, backbone_vars)
    ...   pfc.apply_gradients(g_head, learning_rate)
  """

  def __init__(self, strategy, num_classes, embedding_size, sample_rate=0.1, s=64.0,
               m1=1.0, m2=0.5, m3=0.0, easy_margin=False, initializer=None,
               momentum=0.9, weight_decay=5e-4, seed=0):
    self.num_replicas = int(strategy.num_replicas_in_sync)
    self.ranges = sharding.shard_ranges(num_classes, self.num_replicas)
    self.sample_rate = sharding.check_sample_rate(sample_rate)
    if int(embedding_size) < 1:
      raise ValueError(f"Partial FC needs embedding_size >= 1. Received: "
                       f"embedding_size={embedding_size}")
    initializer = initializer or RowBlockNormal(stddev=0.01, seed=0)
    if not hasattr(initializer, "rows"):
      raise ValueError(f"Partial FC draws its shards with an initializer that has "
                       f"rows(start, stop, dim), e.g. RowBlockNormal. Received: "
                       f"{type(initializer).__name__}")
    self.strategy = strategy
    self.num_classes, self.embedding_size = int(num_classes), int(embedding_size)
    self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
    self.easy_margin = bool(easy_margin)
    self.momentum, self.weight_decay = float(momentum), float(weight_decay)
    self.seed = int(seed)
    self.initializer = initializer
    self.shards = {}  # global replica id -> Shard, for this worker's devices
    devices = strategy.extended.worker_devices
    for replica, device in zip(_local_replica_ids(strategy), devices):
      start, stop = self.ranges[replica]
      shape = [stop - start, self.embedding_size]
      kernel = _device_variable(strategy, device, lambda s=shape: tf.zeros(s),
                                f"partial_fc/kernel_{replica}", trainable=True)
      # Drawn a slice at a time: the host never holds a second copy of a shard.
      for a in range(start, stop, _INIT_ROWS):
        b = min(stop, a + _INIT_ROWS)
        kernel[a - start:b - start].assign(initializer.rows(a, b, self.embedding_size))
      moment = _device_variable(strategy, device, lambda s=shape: tf.zeros(s),
                                f"partial_fc/momentum_{replica}", trainable=False)
      self.shards[replica] = Shard(replica, start, stop, device,
                                   sharding.num_sampled(self.sample_rate, stop - start),
                                   kernel, moment)

  @property
  def variables(self) -> list:
    """This worker's centre and momentum variables (e.g. for finiteness checks)."""
    return [v for r in sorted(self.shards)
            for v in (self.shards[r].kernel, self.shards[r].momentum)]

  def head_memory_bytes(self) -> int:
    """Bytes of centres + momentum on the replica with the largest shard."""
    rows = max(stop - start for start, stop in self.ranges)
    return 2 * rows * self.embedding_size * 4

  def _replica_shard(self) -> Shard:
    context = tf.distribute.get_replica_context()
    if context is None:
      raise ValueError("PartialFC's step runs in replica context: call it inside "
                       "strategy.run")
    replica = tf.get_static_value(context.replica_id_in_sync_group)
    if replica is None:
      raise ValueError("PartialFC needs a static replica id (MirroredStrategy, "
                       "MultiWorkerMirroredStrategy or OneDeviceStrategy)")
    return self.shards[int(replica)]

  def shard_variable(self) -> tf.Variable:
    """This replica's `[n_r, D]` centres: the variable to pass to `tape.gradient`."""
    return self._replica_shard().kernel

  def replica_loss(self, embeddings, labels, step, use_margin=True):
    """This replica's share of the global batch's loss and accuracy.

    Args:
      embeddings: [b, D] this replica's embeddings (any float dtype; the
        head computes in float32). Every replica must have the same b.
      labels: int [b] classes in `[0, num_classes)`.
      step: int scalar (the optimizer's step counter), keys the sampling.
      use_margin: False gives `s * cos` logits (the margin warm-up).

    Returns:
      `(loss_share, accuracy_share)`, float32 scalars that sum over the
      replicas to the mean full-softmax loss of the global batch and to its
      accuracy (margin-free argmax among the sampled classes).
    """
    shard = self._replica_shard()
    context = tf.distribute.get_replica_context()
    x = context.all_gather(tf.cast(embeddings, tf.float32), axis=0)
    y = context.all_gather(tf.cast(tf.reshape(labels, [-1]), tf.int32), axis=0)
    # MultiWorkerMirroredStrategy's collective gather loses the static batch
    # size that sampling needs; every replica's batch has the same size.
    local = embeddings.shape[0]
    if local is not None:
      x = tf.ensure_shape(x, [self.num_replicas * local, self.embedding_size])
      y = tf.ensure_shape(y, [self.num_replicas * local])
    local = y - shard.start
    local = tf.where((local >= 0) & (local < shard.size), local, -1)
    valid = None
    if shard.num_sample < shard.size:
      sample = sampling.sample_classes(
          local, shard.size, shard.num_sample,
          sampling.step_seed(self.seed, step, shard.replica))
      centres, columns, valid = (tf.gather(shard.kernel, sample.indices), sample.columns,
                                 sample.valid)
      classes = sample.indices + shard.start
    else:
      centres, columns = shard.kernel, local
      classes = tf.range(shard.start, shard.stop)
    cosine = tf.matmul(heads.l2_normalize(x), heads.l2_normalize(tf.cast(centres, tf.float32)),
                       transpose_b=True)
    plain = self.s * cosine
    if valid is not None:
      # Unused sample slots leave the softmax: exp() of their logit is 0.
      plain += tf.where(valid, 0.0, _MASKED_LOGIT)
    owned = columns >= 0
    # Target cosine and logit of each example on this shard (0 where another
    # shard owns the class).
    target_cos = tf.gather(cosine, tf.maximum(columns, 0), batch_dims=1)
    target = tf.where(owned, self.s * target_cos, 0.0)
    logits = plain
    if use_margin:
      # The margin touches one logit per row: computed on the target cosines
      # alone and added in place, where the [B, S] form of the margin costs
      # several dense passes (and their gradients) over all logits.
      margined = margin_lib.combined_margin_logits(
          target_cos[:, None], tf.where(owned, 0, -1), s=self.s, m1=self.m1, m2=self.m2,
          m3=self.m3, easy_margin=self.easy_margin)[:, 0]
      target = tf.where(owned, margined, 0.0)
      rows = tf.range(tf.shape(columns)[0])
      logits = tf.tensor_scatter_nd_add(
          plain, tf.stack([rows, tf.maximum(columns, 0)], axis=1),
          tf.where(owned, margined - self.s * target_cos, 0.0))
    return self._cross_shard_softmax(context, logits, plain, target, classes, y)

  def _cross_shard_softmax(self, context, logits, plain, target, classes, labels):
    """Exact softmax cross-entropy and accuracy over the union of the shards.

    Args:
      context: the replica context.
      logits: [B, S] this shard's logits (margin on its targets).
      plain: [B, S] the same without margin (for the accuracy).
      target: [B] each example's target logit on this shard, 0 where another
        shard owns the class.
      classes: [S] global class of each column.
      labels: [B] global labels.
    """
    best = tf.gather(classes, tf.argmax(plain, axis=1, output_type=tf.int32))
    local_stats = tf.stack([tf.reduce_max(logits, axis=1), tf.reduce_max(plain, axis=1),
                            tf.cast(tf.equal(best, labels), tf.float32)], axis=1)
    # [R, B, 3]; forward-only, so the gather's gradient never runs.
    stats = tf.stop_gradient(context.all_gather(tf.stop_gradient(local_stats), axis=0))
    stats = tf.reshape(stats, [self.num_replicas, -1, 3])
    row_max = tf.reduce_max(stats[:, :, 0], axis=0)
    # The shard with the highest margin-free logit predicts (the first on
    # ties, like an argmax over the whole kernel); its own argmax hit or not.
    winner = tf.argmax(stats[:, :, 1], axis=0, output_type=tf.int32)
    correct = tf.gather(tf.transpose(stats[:, :, 2]), winner, batch_dims=1)

    exp_sum = tf.reduce_sum(tf.exp(logits - row_max[:, None]), axis=1)
    exp_sum, target = context.all_reduce(tf.distribute.ReduceOp.SUM, [exp_sum, target])
    per_example = tf.math.log(exp_sum) + row_max - target
    replicas = float(self.num_replicas)
    return (tf.reduce_mean(per_example) / replicas,
            tf.reduce_mean(correct) / replicas)

  def apply_gradients(self, grad, learning_rate, apply_if=True):
    """Updates this replica's whole shard: coupled decay + Keras momentum SGD.

    Args:
      grad: the gradient of this replica's loss share w.r.t.
        `shard_variable()` (dense or `tf.IndexedSlices`, unscaled). It is
        already the full-batch gradient: do not sum it over replicas.
      learning_rate: float scalar.
      apply_if: bool (tensor) scalar; False leaves weights and momentum
        untouched (a loss-scale optimizer skipping the step).
    """
    if grad is None:
      raise ValueError("PartialFC.apply_gradients got no gradient: was "
                       "shard_variable() a source of tape.gradient?")
    shard = self._replica_shard()

    if isinstance(grad, tf.IndexedSlices):
      values, indices = grad.values, grad.indices
    else:
      values, indices = tf.convert_to_tensor(grad), None

    def update():
      _sgd_update(shard.kernel, shard.momentum, values, indices,
                  tf.cast(learning_rate, tf.float32), self.momentum, self.weight_decay)
      return tf.constant(True)

    if apply_if is True:
      update()
    else:
      tf.cond(tf.convert_to_tensor(apply_if), update, lambda: tf.constant(False))

  # Checkpoints, inspection and fine-tuning.

  def _covers_all(self):
    return len(self.shards) == self.num_replicas

  def assemble_kernel(self) -> np.ndarray:
    """The full `[C, D]` float32 kernel (when this process holds every shard).

    Raises:
      ValueError: under MultiWorkerMirroredStrategy, where each worker holds
        its own shards only; read a checkpoint with `read_kernel` instead.
    """
    if not self._covers_all():
      held = [(s.start, s.stop) for s in self.shards.values()]
      raise ValueError(f"this worker holds Partial FC classes {held} only, not all "
                       f"{self.num_classes}; read the full kernel from a checkpoint "
                       f"(tfface.training.partial_fc.read_kernel)")
    return np.concatenate([self.shards[r].kernel.numpy() for r in sorted(self.shards)])

  def set_kernel(self, kernel):
    """Loads this worker's rows of a full `[C, D]` kernel; clears the momentum.

    Args:
      kernel: array-like [C, D] (a `np.memmap` is read row range by row range).
    """
    shape = tuple(np.shape(kernel))
    if shape != (self.num_classes, self.embedding_size):
      raise ValueError(f"Partial FC kernel must be [{self.num_classes}, "
                       f"{self.embedding_size}]. Received: shape={shape}")
    for shard in self.shards.values():
      shard.kernel.assign(np.asarray(kernel[shard.start:shard.stop], np.float32))
      shard.momentum.assign(tf.zeros_like(shard.momentum))

  def save(self, ckpt_dir: str, step: int):
    """Writes this worker's shards (centres + momentum) of checkpoint `step`.

    Every worker must call it (each writes its own shards; `ckpt_dir` must be
    shared storage under MultiWorkerMirroredStrategy) before the main
    checkpoint of `step` is committed.
    """
    for shard in self.shards.values():
      checkpoint.write_shard(ckpt_dir, step, shard.replica, self.num_replicas,
                             (shard.start, shard.stop), self.num_classes,
                             shard.kernel.numpy(), shard.momentum.numpy())

  def restore(self, ckpt_dir: str, step: int) -> str:
    """Loads this worker's rows (centres + momentum) from checkpoint `step`.

    The checkpoint may come from any replica count: each shard reads the rows
    it owns now from whichever saved shards hold them.

    Returns:
      A description for the log.

    Raises:
      ValueError: the step is incomplete or was saved for another number of
        classes or embedding width.
    """
    for shard in self.shards.values():
      kernel, moment = checkpoint.read_rows(ckpt_dir, step, shard.start, shard.stop,
                                            self.num_classes, self.embedding_size)
      shard.kernel.assign(kernel)
      shard.momentum.assign(moment)
    saved = len(checkpoint.shards(ckpt_dir, step))
    return (f"Partial FC centres of step {step} from {saved} shard(s) into "
            f"{self.num_replicas}")

  @staticmethod
  def prune(ckpt_dir: str, keep_steps):
    """Deletes shard files of older steps; see `checkpoint.prune`."""
    return checkpoint.prune(ckpt_dir, keep_steps)

  @staticmethod
  def latest_complete_step(ckpt_dir: str):
    """The newest step with every Partial FC shard saved, or None."""
    return checkpoint.latest_complete_step(ckpt_dir)
