"""Coupled (MXNet / PyTorch) L2 weight decay as a loss term.

MXNet and PyTorch SGD add `wd * w` to the gradient before the momentum
update. Keras 3 optimizers' `weight_decay=` instead shrinks the weights
separately from the momentum buffer ("decoupled", AdamW-style), which gives
a different trajectory under momentum. Adding `wd / 2 * sum ||w||^2` to the
loss has gradient `wd * w` and reproduces the coupled update exactly.

InsightFace decays conv and dense kernels, BatchNorm gamma and PReLU slopes
(and the classification head's class centres), not BatchNorm beta, biases
or moving statistics.
"""
from keras import ops

# Last path component of the variables that get weight decay.
DECAYED_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "gamma",
                 "alpha")


def weight_decay_variables(*modules):
  """The trainable variables that coupled weight decay applies to.

  Args:
    *modules: Keras models or layers (e.g. the backbone and the head).

  Returns:
    A list of variables (each once, in model order) whose name is one of
    `DECAYED_NAMES`: conv/dense kernels, BN gamma, PReLU alpha and the
    heads' class-centre kernels.
  """
  seen, selected = set(), []
  for module in modules:
    for variable in module.trainable_variables:
      name = variable.path.split("/")[-1]
      if name in DECAYED_NAMES and id(variable) not in seen:
        seen.add(id(variable))
        selected.append(variable)
  return selected


def l2_weight_decay(variables, weight_decay):
  """`weight_decay / 2 * sum ||w||^2` in float32 (gradient `weight_decay * w`).

  Args:
    variables: variables or tensors, e.g. from `weight_decay_variables`.
    weight_decay: the coupled decay coefficient (InsightFace: 5e-4).

  Returns:
    float32 scalar to add to the training loss.
  """
  total = ops.convert_to_tensor(0.0, dtype="float32")
  for variable in variables:
    total = total + ops.sum(ops.square(ops.cast(variable, "float32")))
  return 0.5 * float(weight_decay) * total
