"""Reduces a functional Keras backbone to a `tfface.weights.graph.Graph`.

Each parametric Keras layer becomes one operation named after the layer and
holding it in `attrs["layer"]`; `ZeroPadding2D` layers are folded into the
`pads` of the convolution they feed (tfface pads explicitly where PyTorch
and MXNet pad inside the convolution), and the input normalization and
dropout disappear. The graph is walked through Keras' node bookkeeping
(`_inbound_nodes`, `_keras_history`), the only record of a functional
model's wiring.
"""
import keras

from tfface.models import layers as model_layers
from tfface.weights import graph as graph_lib

# Layers that compute nothing at inference time, or whose job is done
# elsewhere (the normalization is re-created from the source's preprocessing).
_PASS_THROUGH = (keras.layers.Dropout, model_layers.InputNormalization)


def _pair(value):
  return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _conv_attrs(layer, in_channels):
  """Structural attributes of a Conv2D / DepthwiseConv2D, ONNX-style."""
  if layer.padding != "valid" or _pair(layer.dilation_rate) != (1, 1):
    raise ValueError(f"Keras layer {layer.name!r}: only VALID, undilated "
                     "convolutions can take imported weights (tfface pads "
                     "with ZeroPadding2D layers)")
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    if layer.depth_multiplier != 1:
      raise ValueError(f"Keras layer {layer.name!r}: depth_multiplier must be 1")
    groups = in_channels
  else:
    groups = layer.groups
  return {"kernel": _pair(layer.kernel_size), "strides": _pair(layer.strides),
          "pads": (0, 0, 0, 0), "groups": groups, "layer": layer}


def _op_for(layer, inputs):
  """Returns the graph operation for `layer`, or None for a pass-through."""
  name = layer.name
  if isinstance(layer, keras.layers.InputLayer):
    return graph_lib.Op(name, "input", [])
  if isinstance(layer, _PASS_THROUGH):
    return None
  in_shape = tuple(inputs[0].shape[1:]) if inputs else ()
  if isinstance(layer, keras.layers.ZeroPadding2D):
    (top, bottom), (left, right) = layer.padding
    return graph_lib.Op(name, "pad", [], {"pads": (top, left, bottom, right)})
  if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
    return graph_lib.Op(name, "conv", [], _conv_attrs(layer, in_shape[-1]))
  kinds = ((keras.layers.BatchNormalization, "bn"), (keras.layers.PReLU, "prelu"),
           (keras.layers.Add, "add"), (keras.layers.Flatten, "flatten"),
           (keras.layers.Dense, "dense"))
  for cls, kind in kinds:
    if isinstance(layer, cls):
      return graph_lib.Op(name, kind, [], {"layer": layer, "in_shape": in_shape})
  raise ValueError(f"Keras layer {name!r} ({type(layer).__name__}) has no "
                   "counterpart in imported networks")


def keras_graph(model):
  """Builds the operation graph of a functional Keras model.

  Args:
    model: a functional `keras.Model` (e.g. from `build_backbone`), not yet
      used as a layer of another model.

  Returns:
    A `Graph` whose parametric operations hold their Keras layers in
    `attrs["layer"]`.

  Raises:
    ValueError: for a layer the importer cannot map, a layer called more
      than once, or a model with several inputs or outputs.
  """
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise ValueError(f"model {model.name!r}: the importer needs one input and "
                     "one output")
  graph = graph_lib.Graph(f"Keras model {model.name!r}")
  alias = {}  # layer name -> name of the graph op standing for its output
  for layer in model.layers:
    if len(layer._inbound_nodes) != 1:  # pylint: disable=protected-access
      raise ValueError(f"Keras layer {layer.name!r} is called "
                       f"{len(layer._inbound_nodes)} times; expected once")  # pylint: disable=protected-access
    inputs = layer._inbound_nodes[0].input_tensors  # pylint: disable=protected-access
    sources = [alias[t._keras_history.operation.name] for t in inputs]  # pylint: disable=protected-access
    op = _op_for(layer, inputs)
    if op is None:
      alias[layer.name] = sources[0] if sources else None
      continue
    op.inputs = sources
    alias[layer.name] = graph.add(op).name
  graph.output = alias[model.outputs[0]._keras_history.operation.name]  # pylint: disable=protected-access
  _fold_padding(graph)
  return graph


def _fold_padding(graph):
  """Moves each ZeroPadding2D into the `pads` of the convolution it feeds."""
  readers = graph.consumers()
  for name, op in list(graph.ops.items()):
    if op.kind != "pad":
      continue
    targets = [graph.ops.get(r) for r in readers[name]]
    if len(targets) != 1 or targets[0] is None or targets[0].kind != "conv":
      raise ValueError(f"Keras layer {name!r}: zero padding must feed exactly "
                       "one convolution")
    conv = targets[0]
    conv.attrs["pads"] = tuple(a + b for a, b in zip(conv.attrs["pads"],
                                                     op.attrs["pads"]))
    graph.bypass(name)
