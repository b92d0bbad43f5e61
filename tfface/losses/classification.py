"""Softmax cross-entropy on sparse integer labels, computed in float32."""
from keras import ops


def softmax_cross_entropy(labels, logits):
  """Per-example softmax cross-entropy of logits against integer labels.

  Sparse labels avoid a one-hot matrix over (possibly 100k+) classes; the
  log-softmax runs in float32 even when the logits arrive as float16.

  Args:
    labels: int tensor [batch] of target classes.
    logits: float tensor [batch, num_classes].

  Returns:
    float32 tensor [batch] of losses.
  """
  logits = ops.cast(logits, "float32")
  labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
  return ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
