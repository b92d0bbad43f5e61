"""Writes matched source weights into Keras layers, converting layouts.

PyTorch / ONNX layouts and their Keras counterparts:

| source                          | Keras                                   |
| ------------------------------- | --------------------------------------- |
| conv weight (O, I/g, kH, kW)    | Conv2D kernel (kH, kW, I/g, O)          |
| depthwise weight (C, 1, kH, kW) | DepthwiseConv2D kernel (kH, kW, C, 1)   |
| linear weight (out, in)         | Dense kernel (in, out)                  |
| linear input `c*H*W + h*W + w`  | Flatten of NHWC: `(h*W + w)*C + c`      |
| BN weight/bias/running_mean/var | gamma/beta/moving_mean/moving_variance  |
| PReLU weight (C,) or (1,)       | PReLU alpha (1, 1, C)                   |

Biases that a Keras layer does not have (tfface convolutions are bias-free)
move into the following BatchNorm: BN(x + b) with mean m equals BN(x) with
mean m - b. A BatchNorm that Keras builds without gamma (the iresnet
embedding BN, whose gamma arcface_torch fixes at 1) takes a positive gamma
through its variance: gamma / sqrt(var + eps) = 1 / sqrt(var' + eps) with
var' = (var + eps) / gamma**2 - eps.
"""
import keras
import numpy as np


def _variables(layer):
  return {v.name.split("/")[-1]: v for v in layer.weights}


def _names(sop, key):
  names = sorted(sop.tensors.get(key, ())) or [f"{sop.name}.{key}"]
  return ", ".join(names)


def _fold_missing_biases(pairs, keras_graph):
  """Moves source biases that have no Keras variable into the next BatchNorm."""
  source_of = {kop.name: sop for kop, sop in pairs}
  readers = keras_graph.consumers()
  errors = []
  for kop, sop in pairs:
    if "bias" not in sop.params or "bias" in _variables(kop.attrs["layer"]):
      continue
    following = [keras_graph.ops.get(r) for r in readers[kop.name]]
    if len(following) != 1 or following[0] is None or following[0].kind != "bn":
      errors.append(f"{_names(sop, 'bias')}: Keras layer {kop.name!r} has no "
                    "bias and no BatchNorm after it to take one")
      continue
    bn = source_of[following[0].name]
    bias = sop.params.pop("bias")
    # New arrays: exporters share identical initializers between nodes.
    bn.params["mean"] = np.asarray(bn.params["mean"], np.float32) - bias
    bn.tensors["mean"] = bn.tensors.get("mean", frozenset()) | sop.tensors.pop("bias")
  return errors


def _conv_values(kop, sop, variables):
  weight = sop.params["weight"]
  depthwise = isinstance(kop.attrs["layer"], keras.layers.DepthwiseConv2D)
  # (C, 1, kH, kW) -> (kH, kW, C, 1); (O, I/g, kH, kW) -> (kH, kW, I/g, O).
  perm = (2, 3, 0, 1) if depthwise else (2, 3, 1, 0)
  values = [("kernel", np.transpose(weight, perm) if weight.ndim == 4
             else weight, "weight")]
  if "bias" in variables:
    values.append(("bias", sop.params.get(
        "bias", np.zeros(weight.shape[0], np.float32)), "bias"))
  return values


def _dense_values(sop, variables, flatten_shape):
  weight = sop.params["weight"]
  out = weight.shape[0]
  if (flatten_shape and len(flatten_shape) == 3
      and flatten_shape[0] * flatten_shape[1] > 1
      and weight.ndim == 2 and weight.shape[1] == int(np.prod(flatten_shape))):
    h, w, c = flatten_shape
    # PyTorch flattened NCHW; Keras flattens NHWC: reorder the input rows.
    kernel = weight.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(-1, out)
  else:
    kernel = weight.T
  values = [("kernel", kernel, "weight")]
  if "bias" in variables:
    values.append(("bias", sop.params.get("bias", np.zeros(out, np.float32)),
                   "bias"))
  return values


def _prelu_values(sop, variables):
  slope = np.ravel(sop.params["slope"])
  shape = tuple(variables["alpha"].shape)
  if slope.size == 1:  # nn.PReLU() with one shared slope
    slope = np.broadcast_to(slope, shape[-1:])
  if slope.size == int(np.prod(shape)):
    slope = slope.reshape(shape)  # (C,) -> (1, 1, C)
  return [("alpha", slope, "slope")]


def _bn_values(kop, sop, variables, errors):
  layer, p = kop.attrs["layer"], sop.params
  eps = float(sop.attrs.get("epsilon", layer.epsilon))
  gamma, var = np.asarray(p["gamma"]), np.asarray(p["var"])
  if "gamma" not in variables and np.any(gamma != 1):
    if np.any(gamma <= 0):
      errors.append(f"{_names(sop, 'gamma')}: Keras layer {kop.name!r} has no "
                    "gamma and cannot take one that is not positive")
    else:
      var = (var + eps) / np.square(gamma) - eps
  if "beta" not in variables and np.any(np.asarray(p["beta"]) != 0):
    errors.append(f"{_names(sop, 'beta')}: Keras layer {kop.name!r} has no beta")
  size = max(np.size(a) for a in (gamma, p["beta"], p["mean"], var))
  def spread(a):  # identity BatchNorms from folding hold one shared gamma
    return np.broadcast_to(a, (size,)) if np.size(a) == 1 else a
  values = [("gamma", spread(gamma), "gamma"), ("beta", spread(p["beta"]), "beta"),
            ("moving_mean", spread(p["mean"]), "mean"),
            ("moving_variance", spread(var), "var")]
  return [v for v in values if v[0] in variables], eps


def assign(pairs, keras_graph, errors=()):
  """Converts and writes the source weights of every pair into Keras.

  Nothing is written unless every weight fits.

  Args:
    pairs: (keras op, source op) pairs from `matching.match` or
      `torch_names.pair_state_dict`; source params in source layout.
    keras_graph: the backbone's graph, for the layers that follow a layer.
    errors: problems the caller found already (e.g. unused tensors), listed
      together with those found here.

  Returns:
    The number of distinct source tensors written.

  Raises:
    ValueError: listing every weight whose shape differs and every bias or
      gamma that has no place in the Keras model.
  """
  errors = list(errors) + _fold_missing_biases(pairs, keras_graph)
  writes, epsilons = [], []
  for kop, sop in pairs:
    variables = _variables(kop.attrs["layer"])
    if kop.kind == "conv":
      values = _conv_values(kop, sop, variables)
    elif kop.kind == "dense":
      before = keras_graph.ops[kop.inputs[0]]
      values = _dense_values(sop, variables, before.attrs.get("in_shape")
                             if before.kind == "flatten" else None)
    elif kop.kind == "prelu":
      values = _prelu_values(sop, variables)
    else:
      values, eps = _bn_values(kop, sop, variables, errors)
      epsilons.append((kop.attrs["layer"], eps))
    for key, value, source_key in values:
      variable, value = variables[key], np.asarray(value, np.float32)
      if tuple(value.shape) != tuple(variable.shape):
        shape = np.shape(sop.params.get(source_key))
        converted = ("" if tuple(value.shape) == shape
                     else f" ({tuple(value.shape)} in Keras layout)")
        errors.append(
            f"{kop.name}/{key}: Keras expects {tuple(variable.shape)}; source "
            f"{_names(sop, source_key)} has shape {shape}{converted}")
        continue
      writes.append((variable, value))
  if errors:
    raise ValueError(f"weights that do not fit {keras_graph.origin}:\n  - "
                     + "\n  - ".join(errors))
  for variable, value in writes:
    variable.assign(value)
  for layer, eps in epsilons:
    layer.epsilon = eps  # read at call time; saved by get_config
  return len({name for _, sop in pairs for names in sop.tensors.values()
              for name in names})

