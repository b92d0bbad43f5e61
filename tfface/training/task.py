"""What one training step computes: models, optimizer, loss and the per-replica update.

The loss of a replica is its share of the global mean,
`sum(per-example loss) / global_batch`, plus `1 / num_replicas` of the
coupled weight-decay term, so that the gradients the optimizer sums over
replicas are exactly the gradients of one big batch. Triplet loss is a mean
over the replica's own mined triplets and is divided by `num_replicas`.

The step returns its metrics from what it computed anyway: the training
accuracy is the argmax of the cosines the margin head already produced (the
margin changes only the label's column), so no second classifier matmul
runs. Everything in it is a tensor op on the replica's device: no host round
trip, so `TrainLoop` can compile it with XLA and run many steps per call.

With `head.partial_fc` the class centres are a `PartialFC` instead of a
mirrored head: sharded over the replicas with their own whole-shard SGD
(arcface_torch's PartialFC V2); the step all-gathers the batch's embeddings
and computes the softmax exactly across the shards (docs/distributed.md).
Its loss share is the global mean loss / R; the backbone's gradients still
sum over replicas as for the replicated head.

Under mixed float16 the backbone computes in float16 and the optimizer is a
`keras.optimizers.LossScaleOptimizer`; under mixed bfloat16 (no loss scaling
needed: bfloat16 has float32's range) only the policy changes. Embeddings,
head and loss stay float32 in both.
"""
import keras
import tensorflow as tf

from tfface import losses
from tfface import models
from tfface.models.initializers import RowBlockNormal
from tfface.training import partial_fc as partial_fc_lib
from tfface.training import schedules

# Metric names a step reports, per loss family.
CLASSIFICATION_METRICS = ("loss", "accuracy", "weight_decay")
TRIPLET_METRICS = ("loss", "active", "weight_decay")


def head_options(config) -> dict:
  """Keyword arguments for `build_head`: the scale plus any margin the config sets."""
  if config.loss == "softmax":
    return {}  # a plain FC with bias: no scale, no margin
  # Drawn by row blocks: Partial FC's shards start as rows of this same matrix.
  options = {"s": float(config.head.s),
             "kernel_initializer": RowBlockNormal(stddev=float(config.head.kernel_init_std),
                                                  seed=int(config.seed))}
  for name in ("m1", "m2", "m3"):
    if config.head[name] is not None:
      options[name] = float(config.head[name])
  if config.head.easy_margin:
    options["easy_margin"] = True
  return options


def build_backbone(config, image_size):
  """The backbone named by `config.network`, with the config's overrides."""
  overrides = {k: tuple(v) if isinstance(v, list) else v
               for k, v in config.backbone.overrides.to_dict().items()}
  return models.build_backbone(
      config.network, embedding_size=config.backbone.embedding_size,
      input_shape=(*image_size, 3), dropout=config.backbone.dropout, **overrides)


class FaceTask:
  """Backbone, head and optimizer of a run, and its per-replica train step.

  Build it inside `strategy.scope()`.

  Args:
    config: the run's ConfigDict.
    num_classes: identities in the training data.
    image_size: `(height, width)` of the training images.
    global_batch: images per step over all replicas.
    num_replicas: replicas in sync.
    schedule: the learning-rate schedule (a function of the step).
    strategy: the run's strategy (needed for `head.partial_fc`).
  """

  def __init__(self, config, num_classes, image_size, global_batch, num_replicas,
               schedule, strategy=None):
    self.config = config
    self.triplet = config.loss == "triplet"
    self.global_batch = int(global_batch)
    self.num_replicas = int(num_replicas)
    self.backbone = build_backbone(config, image_size)
    self.head = self.partial_fc = None
    if config.head.partial_fc:
      options = head_options(config)
      initializer = options.pop("kernel_initializer")
      self.partial_fc = partial_fc_lib.PartialFC(
          strategy or tf.distribute.get_strategy(), num_classes,
          config.backbone.embedding_size, sample_rate=config.head.sample_rate,
          initializer=initializer, momentum=config.momentum,
          weight_decay=config.weight_decay, seed=config.seed,
          **dict(models.HEAD_MARGINS[config.loss], **options))
    elif not self.triplet:
      self.head = models.build_head(config.loss, num_classes,
                                    embedding_size=config.backbone.embedding_size,
                                    **head_options(config))
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
    # Only float16 needs loss scaling; bfloat16 has float32's exponent range.
    self.loss_scaled = config.mixed_precision == "mixed_float16"
    if self.loss_scaled:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    self.optimizer = optimizer
    self.schedule = schedule
    # Build the slots now, so that a checkpoint restores into them at once.
    self.optimizer.build(self.variables(train_backbone=True))
    self._decayed = {id(v) for v in losses.weight_decay_variables(*self.modules)}

  @property
  def metric_names(self):
    return TRIPLET_METRICS if self.triplet else CLASSIFICATION_METRICS

  @property
  def modules(self):
    return [m for m in (self.backbone, self.head) if m is not None]

  @property
  def has_collectives(self) -> bool:
    """Whether the forward pass itself talks to other replicas (Partial FC)."""
    return self.partial_fc is not None and self.num_replicas > 1

  def variables(self, train_backbone=True):
    """Trainable variables the optimizer updates: all, or the head's only (frozen backbone).

    Partial FC's centres are not among them: they have their own update.
    """
    modules = self.modules if train_backbone else [m for m in (self.head,) if m]
    return [v for m in modules for v in m.trainable_variables]

  @property
  def step(self):
    """The optimizer's step counter (restored with the checkpoint)."""
    return self.optimizer.iterations

  def learning_rate(self, step=None):
    """The rate of the update that takes the counter from `step` to `step + 1`."""
    return self.schedule(self.step if step is None else step)

  def _forward(self, images, labels, use_margin, train_backbone=True):
    """This replica's share of the data loss and its second metric.

    A frozen backbone (`train_backbone=False`) runs in inference mode, as
    Keras fine-tuning does: its BatchNorm statistics stay those it came with.
    """
    embeddings = self.backbone(images, training=bool(train_backbone))
    if self.triplet:
      tc = self.config.triplet
      loss, active = losses.triplet_loss_and_active(labels, embeddings, margin=tc.margin,
                                                    mining=tc.mining)
      # `active` is this replica's fraction; the mean over replicas is what
      # the summed metrics then report.
      return loss / self.num_replicas, active / self.num_replicas
    if self.partial_fc is not None:
      return self.partial_fc.replica_loss(embeddings, labels, self.step,
                                          use_margin=use_margin)
    embeddings = tf.cast(embeddings, tf.float32)
    if isinstance(self.head, models.MarginHead):
      cosine = self.head.cosine(embeddings)
      # Label -1 = no margin: the warm-up's s * cos logits from the same cosines.
      margin_labels = labels if use_margin else tf.fill(tf.shape(labels), -1)
      logits = self.head.margin_logits(cosine, margin_labels)
      scores = cosine  # margin-free: the margin would hide correct answers at small s
    else:
      logits = self.head(embeddings)
      scores = logits
    per_example = losses.softmax_cross_entropy(labels, logits)
    predicted = tf.argmax(scores, axis=-1, output_type=tf.int32)
    correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
    return (tf.reduce_sum(per_example) / self.global_batch,
            tf.stop_gradient(correct) / self.global_batch)

  def compute_gradients(self, images, labels, train_backbone=True, use_margin=True):
    """Forward and backward on this replica's batch; `(metrics, gradients)`.

    The gradients are those of `variables(train_backbone)`, then (Partial
    FC) of this replica's shard of centres. Without Partial FC this is pure
    computation on the replica's device, the part XLA compiles under every
    strategy. See `replica_step` for the arguments.
    """
    labels = tf.cast(labels, tf.int32)
    variables = self.variables(train_backbone)
    sources = list(variables)
    if self.partial_fc is not None:
      sources.append(self.partial_fc.shard_variable())
    decayed = [v for v in variables if id(v) in self._decayed]
    with tf.GradientTape() as tape:
      data_loss, second = self._forward(images, labels, use_margin, train_backbone)
      decay = losses.l2_weight_decay(decayed, self.config.weight_decay)
      total = data_loss + decay / self.num_replicas
      scaled = self.optimizer.scale_loss(total) if self.loss_scaled else total
    grads = tape.gradient(scaled, sources)
    names = self.metric_names
    return {names[0]: data_loss, names[1]: second,
            names[2]: decay / self.num_replicas}, grads

  def apply_gradients(self, grads, train_backbone=True):
    """Sums the replicas' gradients (inside Keras' `apply`) and updates the weights.

    Partial FC's shard gradient (the last one) is already the full batch's:
    it is unscaled and applied to this replica's shard alone, with the
    learning rate of this step (read before `apply` advances the counter),
    and skipped when a loss-scale optimizer skips the step.
    """
    head_grad = None
    if self.partial_fc is not None:
      *grads, head_grad = grads
      learning_rate = self.schedule(self.step)
      apply_if = True
      if self.loss_scaled:
        sparse = isinstance(head_grad, tf.IndexedSlices)
        values = (head_grad.values if sparse else head_grad) / self.optimizer.dynamic_scale
        head_grad = (tf.IndexedSlices(values, head_grad.indices, head_grad.dense_shape)
                     if sparse else values)
        apply_if = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                                  for g in [values, *grads] if g is not None])
    variables = self.variables(train_backbone)
    if variables:
      self.optimizer.apply(self._prepare_gradients(grads), variables)
    if head_grad is not None:
      self.partial_fc.apply_gradients(head_grad, learning_rate, apply_if=apply_if)

  def replica_step(self, images, labels, train_backbone=True, use_margin=True):
    """One optimizer update on this replica's batch; returns its share of the metrics.

    Summed over replicas, the metrics are the global batch's: the mean data
    loss (before the update), the accuracy (or, for triplet training, the
    fraction of active triplets) and the weight-decay term.

    Args:
      images: uint8 [batch, H, W, 3].
      labels: int [batch].
      train_backbone: False updates the head only (`freeze_backbone_steps`).
      use_margin: False trains a margin head without its margin (s * cos
        logits, a normalized softmax), the warm-up of `head.margin_warmup`.
    """
    metrics, grads = self.compute_gradients(images, labels, train_backbone, use_margin)
    self.apply_gradients(grads, train_backbone)
    return metrics

  def weights_finite(self):
    """True when every trainable weight is finite (checked before each save)."""
    variables = self.variables() + (self.partial_fc.variables if self.partial_fc else [])
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])

  def _prepare_gradients(self, grads):
    """Clips by the global norm of the summed gradient when asked.

    With Partial FC these are the backbone's gradients only (arcface_torch
    also clips the backbone's alone); the centres have their own update.

    Keras sums gradients over replicas inside `apply` and, under a loss-scale
    optimizer, checks them for Inf/NaN per replica first. Clipping needs the
    norm of the sum, and the finiteness check must agree on all replicas,
    so in those cases the sum is formed here and each replica passes on
    `sum / num_replicas`, which `apply` sums back to the total.
    """
    clip = self.config.clip_norm
    context = tf.distribute.get_replica_context()
    needs_sum = self.num_replicas > 1 and (clip or self.loss_scaled)
    if needs_sum:
      grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if clip:
      scale = self.optimizer.dynamic_scale if self.loss_scaled else 1.0
      grads, _ = tf.clip_by_global_norm(grads, clip * scale)
    if needs_sum:
      grads = [g / self.num_replicas for g in grads]
    return grads


def build_task(config, num_classes, image_size, global_batch, num_replicas,
               total_steps, peak_lr, strategy=None):
  """Builds the schedule and a `FaceTask` (call inside `strategy.scope()`)."""
  schedule = schedules.from_config(config.schedule, peak_lr, total_steps)
  return FaceTask(config, num_classes, image_size, global_batch, num_replicas, schedule,
                  strategy)
