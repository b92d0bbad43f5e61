"""Rewrites a freshly read ONNX graph into the vocabulary of the Keras backbones.

Exporters rearrange a network without changing what it computes, and a
structural match must see through that:

* Constant folding (torch.onnx.export's default, and every model-zoo file)
  merges each BatchNorm that follows a convolution into the convolution's
  weight and bias. tfface convolutions have no bias but are always followed
  by a BatchNorm, so such a bias becomes an identity BatchNorm that adds it
  (gamma 1, beta = bias, mean 0, var 1 - eps): exact, and the Keras model
  keeps its structure and stays trainable.
* ONNX simplifiers turn a lone BatchNorm into `Mul` + `Add` with per-channel
  constants: that is a BatchNorm with mean 0 and var 1 - eps as well.
* MXNet exports normalize the pixels inside the graph (`Sub` 127.5,
  `Mul` 0.0078125 on the input): that becomes the model's preprocessing.
* A constant `Add` after a `MatMul` is the dense layer's bias.
"""
import numpy as np

from tfface.weights import graph as graph_lib

_DEFAULT_EPSILON = 1e-5  # PyTorch's BatchNorm default


def _per_channel(array, rank, what):
  """Returns a broadcastable constant as a 1-D per-channel vector (C or 1 long)."""
  array = np.asarray(array)
  if array.ndim > rank:
    raise ValueError(f"{what}: constant of shape {array.shape} has more axes "
                     f"than the {rank}-D tensor it applies to")
  shape = (1,) * (rank - array.ndim) + array.shape
  if any(d != 1 for axis, d in enumerate(shape) if axis != 1):
    raise ValueError(f"{what}: constant of shape {array.shape} is not "
                     "per-channel (channels are axis 1, NCHW)")
  return array.reshape(-1)


def _union(op):
  return frozenset().union(*op.tensors.values()) if op.tensors else frozenset()


def _merge_affine_chains(graph):
  """Composes consecutive affine ops: (x*a + b)*c + d = x*(ac) + (bc + d)."""
  readers = graph.consumers()
  for name in list(graph.ops):
    op = graph.ops.get(name)
    if op is None or op.kind != "affine":
      continue
    prev = graph.ops[op.inputs[0]]
    if prev.kind != "affine" or len(readers[prev.name]) != 1:
      continue
    scale, shift = op.params["scale"], op.params["shift"]
    op.params["shift"] = prev.params["shift"] * scale + shift
    op.params["scale"] = prev.params["scale"] * scale
    origins = _union(prev) | _union(op)
    op.tensors = {"scale": origins, "shift": origins}
    graph.bypass(prev.name)


def _take_input_normalization(graph):
  """Removes an affine op right after the input; returns it as mean/std."""
  (image,) = [op for op in graph.ops.values() if op.kind == "input"]
  readers = [graph.ops.get(r) for r in graph.consumers()[image.name]]
  if len(readers) != 1 or readers[0] is None or readers[0].kind != "affine":
    return None
  op = readers[0]
  scale, shift = np.ravel(op.params["scale"]), np.ravel(op.params["shift"])
  if np.ptp(scale) or np.ptp(shift):
    raise ValueError(f"{graph.origin}: the input normalization {op.name!r} "
                     "differs between channels; tfface models normalize with "
                     "one mean and one std")
  if scale[0] <= 0:
    raise ValueError(f"{graph.origin}: the input normalization {op.name!r} "
                     f"scales by {scale[0]}; expected a positive factor")
  graph.bypass(op.name)
  return {"mean": float(-shift[0] / scale[0]), "std": float(1.0 / scale[0]),
          "in_graph": True, "tensors": _union(op)}


def _shift_into_dense_bias(graph):
  """A pure shift after a dense op (MatMul + Add) becomes its bias."""
  readers = graph.consumers()
  for op in list(graph.ops.values()):
    prev = graph.ops[op.inputs[0]] if op.inputs else None
    if (op.kind != "affine" or prev.kind != "dense"
        or len(readers[prev.name]) != 1 or np.any(op.params["scale"] != 1)):
      continue
    shift = _per_channel(op.params["shift"], 2, op.name).astype(np.float32)
    prev.params["bias"] = prev.params.get("bias", 0) + shift
    prev.tensors["bias"] = prev.tensors.get("bias", frozenset()) | _union(op)
    graph.bypass(op.name)


def _identity_bn(name, inputs, gamma, beta, epsilon, rank, tensors):
  """A BatchNorm computing `x * gamma + beta` (mean 0, var 1 - eps)."""
  size = max(gamma.size, beta.size)
  return graph_lib.Op(
      name, "bn", inputs,
      {"epsilon": epsilon, "rank": rank, "synthetic": True},
      {"gamma": np.broadcast_to(gamma, (size,)).astype(np.float32),
       "beta": np.broadcast_to(beta, (size,)).astype(np.float32),
       "mean": np.zeros(size, np.float32),
       "var": np.full(size, 1.0 - epsilon, np.float32)},
      tensors)


def _affine_to_bn(graph, epsilon):
  """Every remaining per-channel affine op is a folded BatchNorm."""
  for name, op in list(graph.ops.items()):
    if op.kind != "affine":
      continue
    rank = op.attrs["rank"]
    bn = _identity_bn(name, op.inputs, _per_channel(op.params["scale"], rank, name),
                      _per_channel(op.params["shift"], rank, name), epsilon,
                      rank, {"gamma": op.tensors["scale"],
                             "beta": op.tensors["shift"]})
    graph.ops[name] = bn  # same name and position: readers stay wired


def _conv_bias_to_bn(graph, epsilon):
  """Moves the bias of a conv not followed by a BatchNorm into a new one."""
  readers = graph.consumers()
  for op in list(graph.ops.values()):
    if op.kind != "conv" or "bias" not in op.params:
      continue
    targets = [graph.ops.get(r) for r in readers[op.name]]
    if len(targets) == 1 and targets[0] is not None and targets[0].kind == "bn":
      continue  # folded into that BatchNorm's mean once matched
    bias = op.params.pop("bias")
    bn = _identity_bn(f"{op.name}/bias", [], np.ones(1, np.float32), bias,
                      epsilon, op.attrs["rank"], {"beta": op.tensors.pop("bias")})
    graph.insert_after(op.name, bn)


def simplify(graph):
  """Rewrites `graph` in place into conv/bn/prelu/add/flatten/dense ops.

  Args:
    graph: a `Graph` from `onnx_graph`, possibly holding `affine` ops.

  Returns:
    (preprocessing, epsilon): the input normalization found in the graph as
    {"mean", "std", "in_graph", "tensors"} (None when there is none), and
    the BatchNorm epsilon that most BatchNorm nodes use (PyTorch's 1e-5 when
    the graph has none), which the identity BatchNorms also use.

  Raises:
    ValueError: for constants that are not per-channel.
  """
  _merge_affine_chains(graph)
  preprocessing = _take_input_normalization(graph)
  _shift_into_dense_bias(graph)
  epsilons = [op.attrs["epsilon"] for op in graph.ops.values() if op.kind == "bn"]
  epsilon = (max(set(epsilons), key=epsilons.count) if epsilons
             else _DEFAULT_EPSILON)
  _affine_to_bn(graph, epsilon)
  _conv_bias_to_bn(graph, epsilon)
  for op in graph.ops.values():
    if op.kind == "prelu":
      op.params["slope"] = _per_channel(op.params["slope"], op.attrs["rank"],
                                        op.name)
    for key in ("gamma", "beta", "mean", "var"):
      if op.kind == "bn" and key in op.params:
        op.params[key] = np.ravel(op.params[key])
  return preprocessing, epsilon
