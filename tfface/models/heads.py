"""Classification heads for training: normalized-weight margin heads and softmax.

Both heads own one `kernel` of shape [num_classes, embedding_size] (one row
per class, the layout of arcface_torch's FC and convenient for gathering
class rows), run in float32 even under a mixed-precision policy, and are
called as:

* `head(embeddings, labels)` -> training logits [batch, num_classes]
  (margin applied on the target class);
* `head(embeddings)` -> inference logits: `s * cos` for margin heads,
  `x W^T + b` for the softmax head (for accuracy and monitoring).

The exported embedding model never contains a head.
"""
import keras
from keras import ops

from tfface.losses import margin as margin_lib

_EPSILON = 1e-12


def l2_normalize(x, axis=-1):
  """`x / max(||x||, sqrt(eps))` along `axis`, in the input's dtype."""
  sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
  return x * ops.rsqrt(ops.maximum(sq, _EPSILON))


class _ClassHead(keras.layers.Layer):
  """Shared weight handling: a [num_classes, embedding_size] float32 kernel."""

  def __init__(self, num_classes, embedding_size=None, kernel_initializer=None,
               **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    if num_classes < 1:
      raise ValueError(f"{type(self).__name__} needs num_classes >= 1. "
                       f"Received: num_classes={num_classes}")
    self.num_classes = int(num_classes)
    self.embedding_size = None if embedding_size is None else int(embedding_size)
    self.kernel_initializer = keras.initializers.get(
        kernel_initializer or keras.initializers.RandomNormal(stddev=0.01))
    if self.embedding_size is not None:
      self.build((None, self.embedding_size))

  def build(self, embeddings_shape, labels_shape=None):
    if self.built:
      return
    size = embeddings_shape[-1]
    if self.embedding_size is not None and size != self.embedding_size:
      raise ValueError(f"{self.name}: embeddings have {size} features, head "
                       f"expects embedding_size={self.embedding_size}")
    self.embedding_size = int(size)
    self.kernel = self.add_weight(
        shape=(self.num_classes, self.embedding_size),
        initializer=self.kernel_initializer, name="kernel")
    self._build_extra()
    self.built = True

  def _build_extra(self):
    pass

  def _check_width(self, embeddings):
    """Weights built at construction never see `build`'s shape check."""
    size = embeddings.shape[-1]
    if size is not None and size != self.embedding_size:
      raise ValueError(f"{self.name}: embeddings have {size} features, head "
                       f"expects embedding_size={self.embedding_size}")

  def compute_output_shape(self, embeddings_shape, labels_shape=None):
    return (embeddings_shape[0], self.num_classes)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes,
        "embedding_size": self.embedding_size,
        "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
    })
    return config


@keras.saving.register_keras_serializable(package="tfface")
class MarginHead(_ClassHead):
  """Cosine classifier with the combined margin `s * (cos(m1*theta + m2) - m3)`.

  Embeddings and class rows are L2-normalized inside `call`, so the logits
  are scaled cosines; see `tfface.losses.combined_margin_logits` for the
  margin arithmetic (the `theta + m > pi` fallback, `easy_margin`).

  Args:
    num_classes: number of identities.
    embedding_size: embedding width; if given the kernel is created at once,
      otherwise on the first call.
    s: logit scale.
    m1: multiplicative angular margin (SphereFace-style).
    m2: additive angular margin (ArcFace).
    m3: additive cosine margin (CosFace).
    easy_margin: apply the margin only where the target cosine is positive.
    kernel_initializer: initializer of the class centres (normal, std 0.01).
    **kwargs: standard layer arguments; `dtype` defaults to float32.

  Example:
    >>> head = MarginHead(1000, embedding_size=512, m2=0.5)  # ArcFace
    >>> logits = head(embeddings, labels)                     # training
    >>> scaled_cos = head(embeddings)                         # accuracy
  """

  def __init__(self, num_classes, embedding_size=None, s=64.0, m1=1.0, m2=0.5,
               m3=0.0, easy_margin=False, kernel_initializer=None, **kwargs):
    self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
    self.easy_margin = bool(easy_margin)
    super().__init__(num_classes, embedding_size, kernel_initializer, **kwargs)

  def cosine(self, embeddings):
    """Cosine similarity [batch, num_classes] of embeddings to class centres."""
    x = l2_normalize(ops.cast(embeddings, "float32"))
    w = l2_normalize(ops.cast(self.kernel, "float32"))
    return ops.matmul(x, ops.transpose(w))

  def margin_logits(self, cosine, labels):
    """Training logits from cosines this head computed: margin on each label's column.

    A label of -1 gets no margin (`s * cos` on the whole row), which is how
    the training step switches the margin off during `margin_warmup`
    without a second matmul.
    """
    return margin_lib.combined_margin_logits(
        cosine, labels, s=self.s, m1=self.m1, m2=self.m2, m3=self.m3,
        easy_margin=self.easy_margin)

  def call(self, embeddings, labels=None):
    self._check_width(embeddings)
    cosine = self.cosine(embeddings)
    if labels is None:
      return self.s * cosine
    return self.margin_logits(cosine, labels)

  def get_config(self):
    config = super().get_config()
    config.update({"s": self.s, "m1": self.m1, "m2": self.m2, "m3": self.m3,
                   "easy_margin": self.easy_margin})
    return config


@keras.saving.register_keras_serializable(package="tfface")
class SoftmaxHead(_ClassHead):
  """Plain fully connected classifier with bias (`--loss softmax`).

  Labels are accepted and ignored so that every head is called the same way.

  Args:
    num_classes: number of identities.
    embedding_size: embedding width; if given the weights are created at once.
    kernel_initializer: initializer of the kernel (normal, std 0.01).
    **kwargs: standard layer arguments; `dtype` defaults to float32.
  """

  def _build_extra(self):
    self.bias = self.add_weight(shape=(self.num_classes,), initializer="zeros",
                                name="bias")

  def call(self, embeddings, labels=None):
    del labels  # a plain softmax has no margin
    self._check_width(embeddings)
    x = ops.cast(embeddings, "float32")
    return ops.matmul(x, ops.transpose(self.kernel)) + self.bias
