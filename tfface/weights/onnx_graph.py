"""Reads an ONNX face-recognition model into a `tfface.weights.graph.Graph`.

The ONNX graph is walked node by node (ONNX stores nodes in topological
order). Nodes whose inputs are all constants (initializers, `Constant`,
`Identity` on a weight, the `Unsqueeze` that torch's exporter puts on PReLU
slopes when it does not fold constants) are evaluated here with numpy;
every other node becomes an operation of the graph, with its weights copied
out of the constants. Each weight remembers the initializers it came from,
so that an initializer that ends up nowhere can be reported.

Element-wise Add/Sub/Mul/Div with a constant operand become `affine`
operations (`y = x * scale + shift`) that `onnx_passes` turns into the
input normalization, a dense bias or a BatchNorm.
"""
import numpy as np

from tfface.weights import graph as graph_lib
from tfface.weights import onnx_passes

# Nodes that pass their input through at inference (Cast: fp16 exports).
_ALIASES = ("Identity", "Dropout", "Cast")


class _Const:
  """A constant value plus the names of the initializers it was computed from."""

  def __init__(self, value, origins):
    self.value = np.asarray(value)
    self.origins = frozenset(origins)


def _attributes(node):
  import onnx  # pylint: disable=import-outside-toplevel
  return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _float32_value(value):
  """The shortest decimal of a float32 attribute: 1e-05, not 9.99999974e-06."""
  return float(f"{float(value):.7g}")


def _axes(args, attrs, rank):
  """Unsqueeze/Squeeze axes (an input from opset 13, an attribute before)."""
  axes = args[1].value if len(args) > 1 else attrs.get("axes")
  return None if axes is None else sorted(int(a) % rank for a in np.ravel(axes))


def _fold_constant(node, args, attrs):
  """Evaluates a node whose inputs are all constant; returns its value."""
  import onnx  # pylint: disable=import-outside-toplevel
  op, values = node.op_type, [a.value for a in args]
  if op == "Constant":
    if "value" in attrs:
      return onnx.numpy_helper.to_array(attrs["value"])
    for key in ("value_float", "value_floats", "value_int", "value_ints"):
      if key in attrs:
        return np.asarray(attrs[key])
  elif op in ("Identity", "Dropout"):
    return values[0]
  elif op == "Unsqueeze":
    out = values[0]
    added = len(np.ravel(args[1].value if len(args) > 1 else attrs["axes"]))
    for axis in _axes(args, attrs, out.ndim + added):
      out = np.expand_dims(out, axis)
    return out
  elif op == "Squeeze":
    axes = _axes(args, attrs, values[0].ndim)
    return np.squeeze(values[0], axis=None if axes is None else tuple(axes))
  elif op == "Reshape":  # 0 keeps the input's size on that axis
    shape = [d if d != 0 else values[0].shape[i] for i, d in enumerate(values[1])]
    return np.reshape(values[0], shape)
  elif op == "Cast":
    if values[0].dtype == object:  # a symbolic shape stays symbolic
      return values[0]
    return values[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
  elif op == "Gather":
    return np.take(values[0], values[1], axis=attrs.get("axis", 0))
  elif op == "Concat":
    return np.concatenate([np.atleast_1d(v) for v in values], attrs["axis"])
  elif op == "Slice":  # on shape vectors; opset 10 moved starts/ends to inputs
    if len(values) > 1:
      starts, ends = values[1], values[2]
      steps = values[4] if len(values) > 4 else 1
    else:
      starts, ends, steps = attrs["starts"], attrs["ends"], 1
    if values[0].ndim != 1 or np.size(starts) != 1 or np.any(np.asarray(steps) != 1):
      raise ValueError("only 1-D, unit-step constant Slice is supported")
    return values[0][int(np.ravel(starts)[0]):int(np.ravel(ends)[0])]
  elif op == "Transpose":
    return np.transpose(values[0], attrs.get("perm"))
  elif op in ("Add", "Sub", "Mul", "Div"):
    fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
          "Div": np.divide}[op]
    return fn(values[0], values[1])
  raise ValueError(f"constant {op} node is not supported")


class _Reader:
  """Walks one ONNX graph; `graph`, `input_shape` and `initializers` result."""

  def __init__(self, model, path):
    import onnx  # pylint: disable=import-outside-toplevel
    self.path = path
    self.graph = graph_lib.Graph(str(path))
    self.consts = {t.name: _Const(onnx.numpy_helper.to_array(t), [t.name])
                   for t in model.graph.initializer}
    self.initializers = set(self.consts)
    self.structural = set()  # initializers used as shapes or axes
    self.producer = {}  # ONNX value name -> graph op name
    inputs = [i for i in model.graph.input if i.name not in self.consts]
    if len(inputs) != 1 or len(model.graph.output) != 1:
      raise ValueError(f"{path}: expected one image input and one embedding "
                       f"output; found {len(inputs)} inputs, "
                       f"{len(model.graph.output)} outputs")
    dims = inputs[0].type.tensor_type.shape.dim
    self.input_shape = tuple(d.dim_value if d.HasField("dim_value") else None
                             for d in dims)
    if len(self.input_shape) != 4 or self.input_shape[1] != 3:
      raise ValueError(f"{path}: input {inputs[0].name!r} has shape "
                       f"{self.input_shape}; expected NCHW with 3 channels")
    self.graph.add(graph_lib.Op(inputs[0].name, "input", [], {"rank": 4}))
    self.producer[inputs[0].name] = inputs[0].name
    for index, node in enumerate(model.graph.node):
      self._visit(index, node)
    output = model.graph.output[0].name
    if output not in self.producer:
      raise ValueError(f"{path}: output {output!r} is not computed from the input")
    self.graph.output = self.producer[output]

  def _const(self, node, position):
    """The constant at input `position` of `node`; None for an absent optional."""
    name = node.input[position] if position < len(node.input) else ""
    if not name:
      return None
    if name not in self.consts:
      raise ValueError(f"input {position} ({name!r}) must be a constant weight")
    return self.consts[name]

  def _add(self, node, index, kind, data, attrs, params):
    """Adds an op reading `data`; params maps key -> _Const (or None)."""
    name = node.name or f"{node.op_type}_{index}"
    rank = self.graph.ops[self.producer[data]].attrs["rank"]
    attrs = dict(attrs, rank=2 if kind in ("flatten", "dense") else rank)
    op = graph_lib.Op(name, kind, [self.producer[data]], attrs)
    # Affine constants stay float64 until they are folded, so that e.g.
    # 1 / (1 / 127.5) gives back 127.5.
    dtype = np.float64 if kind == "affine" else np.float32
    for key, const in params.items():
      if const is not None:
        op.params[key] = np.asarray(const.value, dtype)
        op.tensors[key] = const.origins
    self.graph.add(op)
    self.producer[node.output[0]] = name

  def _visit(self, index, node):
    """Converts one node; errors get the file, node index, type and name."""
    where = f"{self.path}: node #{index} {node.op_type} {node.name!r}"
    try:
      self._convert(index, node, _attributes(node))
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from e

  def _convert(self, index, node, attrs):
    """Folds a constant node, or adds the graph operation a node stands for."""
    op = node.op_type
    data = [i for i in node.input if i and i not in self.consts]
    if not data:  # all inputs constant: fold it now
      args = [self.consts[i] for i in node.input if i]
      value = _fold_constant(node, args, attrs)
      self.consts[node.output[0]] = _Const(
          value, set().union(*[a.origins for a in args]) if args else ())
      return
    if any(d not in self.producer for d in data):
      raise ValueError(f"reads {data}, which do not come from the image input")
    if op in _ALIASES:
      self.producer[node.output[0]] = self.producer[data[0]]
    elif op == "Shape":
      # `x.view(x.size(0), -1)` exports as Shape/Gather/Concat/Reshape: only
      # the rank of the shape matters, so its entries stay unknown (None).
      rank = self.graph.ops[self.producer[data[0]]].attrs["rank"]
      self.consts[node.output[0]] = _Const(np.full(rank, None, object), ())
    elif op == "Conv":
      self._conv(node, index, attrs, data[0])
    elif op == "BatchNormalization":
      if attrs.get("training_mode", 0):
        raise ValueError("training-mode BatchNormalization; export in eval mode")
      params = dict(zip(("gamma", "beta", "mean", "var"),
                        (self._const(node, i) for i in range(1, 5))))
      self._add(node, index, "bn", data[0],
                {"epsilon": _float32_value(attrs.get("epsilon", 1e-5))}, params)
    elif op == "PRelu":
      self._add(node, index, "prelu", data[0], {}, {"slope": self._const(node, 1)})
    elif op in ("Add", "Sub", "Mul", "Div"):
      self._elementwise(node, index, data)
    elif op == "Flatten" and attrs.get("axis", 1) == 1:
      self._add(node, index, "flatten", data[0], {}, {})
    elif op == "Reshape" and np.size(self._const(node, 1).value) == 2:
      # To two axes, i.e. (batch, -1): a flatten.
      self.structural |= self._const(node, 1).origins
      self._add(node, index, "flatten", data[0], {}, {})
    elif op in ("Gemm", "MatMul"):
      self._dense(node, index, attrs, data[0])
    else:
      raise ValueError("operator not supported by the importer (expected "
                       "Conv, BatchNormalization, PRelu, Add, Flatten, Gemm)")

  def _conv(self, node, index, attrs, data):
    """Conv: OIHW weight, optional bias; ONNX pads are (top, left, bottom, right)."""
    weight = self._const(node, 1)
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
      raise ValueError("dilated convolutions are not supported")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b""):
      raise ValueError(f"auto_pad={attrs['auto_pad']!r}; expected explicit pads")
    structure = {"kernel": tuple(weight.value.shape[2:]),
                 "strides": tuple(attrs.get("strides", (1, 1))),
                 "pads": tuple(attrs.get("pads", (0, 0, 0, 0))),
                 "groups": int(attrs.get("group", 1))}
    self._add(node, index, "conv", data, structure,
              {"weight": weight, "bias": self._const(node, 2)})

  def _dense(self, node, index, attrs, data):
    """Gemm (alpha * A @ B' + beta * C) or MatMul by a constant: a dense op."""
    if node.op_type == "MatMul":
      weight, bias, alpha, beta = self._const(node, 1), None, 1.0, 1.0
      layout_is_out_in = False
    else:
      if attrs.get("transA", 0):
        raise ValueError("Gemm with transA=1 is not supported")
      weight, bias = self._const(node, 1), self._const(node, 2)
      alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
      layout_is_out_in = bool(attrs.get("transB", 0))
    # Keep the PyTorch layout (out, in) whatever way the graph stores it.
    value = weight.value if layout_is_out_in else weight.value.T
    params = {"weight": _Const(alpha * value, weight.origins)}
    if bias is not None:
      params["bias"] = _Const(beta * np.ravel(bias.value), bias.origins)
    self._add(node, index, "dense", data, {}, params)

  def _elementwise(self, node, index, data):
    """Add of two branches, or arithmetic with a constant (an affine op)."""
    if len(data) == 2:
      if node.op_type != "Add":
        raise ValueError("only Add may combine two computed tensors")
      name = node.name or f"Add_{index}"
      self.graph.add(graph_lib.Op(
          name, "add", [self.producer[d] for d in data],
          {"rank": self.graph.ops[self.producer[data[0]]].attrs["rank"]}))
      self.producer[node.output[0]] = name
      return
    # Which operand is the constant decides Sub's sign and whether Div is
    # a scale (x / c) or something no backbone computes (c / x).
    const_first = node.input[0] not in data
    const = self.consts[node.input[0 if const_first else 1]]
    value = np.asarray(const.value, np.float64)
    if node.op_type == "Div" and const_first:
      raise ValueError("dividing a constant by a computed tensor")
    scale, shift = {"Add": (1.0, value), "Mul": (value, 0.0),
                    "Sub": (-1.0, value) if const_first else (1.0, -value),
                    "Div": (1.0 / value, 0.0)}[node.op_type]
    scale, shift = np.asarray(scale), np.asarray(shift)
    self._add(node, index, "affine", data[0], {},
              {"scale": _Const(scale, const.origins),
               "shift": _Const(shift, const.origins)})


def read_graph(model, path):
  """Converts an ONNX recognition model into a `Graph` in the importer's terms.

  Args:
    model: an `onnx.ModelProto`.
    path: the file it came from, for messages.

  Returns:
    (graph, info): the `Graph`, and a dict with `input_shape` (NCHW, None
    for dynamic dims), `preprocessing` ({"mean", "std", "in_graph"}: the
    normalization found at the start of the graph, or None),
    `epsilon` (the BatchNorm epsilon most nodes use; 1e-5 without any) and
    `unused_tensors` (initializers that feed no weight).

  Raises:
    ValueError: naming the node, for operators or layouts that a tfface
      backbone has no counterpart for.
  """
  reader = _Reader(model, path)
  graph = reader.graph
  preprocessing, epsilon = onnx_passes.simplify(graph)
  used = set(reader.structural)
  for op in graph.ops.values():
    for names in op.tensors.values():
      used |= names
  if preprocessing:
    used |= preprocessing.pop("tensors")
  info = {
      "input_shape": reader.input_shape,
      "preprocessing": preprocessing,
      "epsilon": epsilon,
      "unused_tensors": sorted(reader.initializers - used),
  }
  return graph, info
