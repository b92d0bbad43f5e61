"""What one training step computes: models, optimizer, loss and the per-replica update.

The loss of a replica is its share of the global mean,
`sum(per-example loss) / global_batch`, plus `1 / num_replicas` of the
coupled weight-decay term, so that the gradients the optimizer sums over
replicas are exactly the gradients of one big batch. Triplet loss is a mean
over the replica's own mined triplets and is divided by `num_replicas`.

Under mixed precision the backbone computes in float16 and the optimizer is a
`keras.optimizers.LossScaleOptimizer`; embeddings, head and loss stay float32.
"""
import keras
import tensorflow as tf

from tfface import losses
from tfface import models
from tfface.training import schedules


def head_options(config) -> dict:
  """Keyword arguments for `build_head`: the scale plus any margin the config sets."""
  if config.loss == "softmax":
    return {}  # a plain FC with bias: no scale, no margin
  options = {"s": float(config.head.s),
             "kernel_initializer": keras.initializers.RandomNormal(
                 stddev=float(config.head.kernel_init_std))}
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
  """

  def __init__(self, config, num_classes, image_size, global_batch, num_replicas,
               schedule):
    self.config = config
    self.triplet = config.loss == "triplet"
    self.global_batch = int(global_batch)
    self.num_replicas = int(num_replicas)
    self.backbone = build_backbone(config, image_size)
    self.head = None
    if not self.triplet:
      self.head = models.build_head(config.loss, num_classes,
                                    embedding_size=config.backbone.embedding_size,
                                    **head_options(config))
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
    self.mixed = config.mixed_precision
    if self.mixed:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    self.optimizer = optimizer
    self.schedule = schedule
    # Build the slots now, so that a checkpoint restores into them at once.
    self.optimizer.build(self.variables(train_backbone=True))
    self._decayed = {id(v) for v in losses.weight_decay_variables(*self.modules)}

  @property
  def modules(self):
    return [m for m in (self.backbone, self.head) if m is not None]

  def variables(self, train_backbone=True):
    """Trainable variables of a step: all of them, or the head's only (frozen backbone)."""
    modules = self.modules if train_backbone else [self.head]
    return [v for m in modules for v in m.trainable_variables]

  @property
  def step(self):
    """The optimizer's step counter (restored with the checkpoint)."""
    return self.optimizer.iterations

  def learning_rate(self):
    return self.schedule(self.step)

  def _loss(self, images, labels, use_margin):
    """This replica's share of the data loss, and the embeddings."""
    embeddings = self.backbone(images, training=True)
    if self.triplet:
      tc = self.config.triplet
      loss = losses.triplet_loss(labels, embeddings, margin=tc.margin, mining=tc.mining)
      return loss / self.num_replicas, embeddings
    # Without labels a margin head returns s * cos: the margin warm-up.
    logits = self.head(embeddings, labels if use_margin else None, training=True)
    per_example = losses.softmax_cross_entropy(labels, logits)
    return tf.reduce_sum(per_example) / self.global_batch, embeddings

  def _accuracy(self, embeddings, labels):
    """This replica's share of the batch's classification accuracy.

    Measured on the logits without margin (s * cos for margin heads): the
    margin logits' argmax misses the label for most correctly placed images
    when s is small, so InsightFace's figure would read near 0 here.
    """
    if self.triplet:
      return tf.zeros([], tf.float32)
    logits = self.head(tf.stop_gradient(embeddings))
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
    return correct / self.global_batch

  def replica_step(self, images, labels, train_backbone=True, use_margin=True):
    """One optimizer update on this replica's batch; returns its share of the metrics.

    Args:
      images: uint8 [batch, H, W, 3].
      labels: int [batch].
      train_backbone: False updates the head only (`freeze_backbone_steps`).
      use_margin: False trains a margin head without its margin (s * cos
        logits, a normalized softmax), the warm-up of `head.margin_warmup`.
    """
    labels = tf.cast(labels, tf.int32)
    variables = self.variables(train_backbone)
    decayed = [v for v in variables if id(v) in self._decayed]
    with tf.GradientTape() as tape:
      data_loss, embeddings = self._loss(images, labels, use_margin)
      decay = losses.l2_weight_decay(decayed, self.config.weight_decay)
      total = data_loss + decay / self.num_replicas
      scaled = self.optimizer.scale_loss(total) if self.mixed else total
    grads = tape.gradient(scaled, variables)
    grads = self._prepare_gradients(grads)
    accuracy = self._accuracy(embeddings, labels)  # before the update, like the loss
    self.optimizer.apply(grads, variables)
    return {"loss": data_loss, "accuracy": accuracy,
            "weight_decay": decay / self.num_replicas}

  def weights_finite(self):
    """True when every trainable weight is finite (checked before each save)."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in self.variables()])

  def _prepare_gradients(self, grads):
    """Clips by the global norm of the summed gradient when asked.

    Keras sums gradients over replicas inside `apply` and, under a loss-scale
    optimizer, checks them for Inf/NaN per replica first. Clipping needs the
    norm of the sum, and the finiteness check must agree on all replicas,
    so in those cases the sum is formed here and each replica passes on
    `sum / num_replicas`, which `apply` sums back to the total.
    """
    clip = self.config.clip_norm
    context = tf.distribute.get_replica_context()
    needs_sum = self.num_replicas > 1 and (clip or self.mixed)
    if needs_sum:
      grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if clip:
      scale = self.optimizer.dynamic_scale if self.mixed else 1.0
      grads, _ = tf.clip_by_global_norm(grads, clip * scale)
    if needs_sum:
      grads = [g / self.num_replicas for g in grads]
    return grads


def build_task(config, num_classes, image_size, global_batch, num_replicas,
               total_steps, peak_lr):
  """Builds the schedule and a `FaceTask` (call inside `strategy.scope()`)."""
  schedule = schedules.from_config(config.schedule, peak_lr, total_steps)
  return FaceTask(config, num_classes, image_size, global_batch, num_replicas, schedule)
