"""Reduces a functional Keras backbone to a `tfface.weights.graph.Graph`.

Each parametric Keras layer becomes one operation named after the layer and
holding it in `attrs["layer"]`; `ZeroPadding2D` layers are folded into the
`pads` of the convolution they feed (tfface pads explicitly where PyTorch
and MXNet pad inside the convolution), and the input normalization and
dropout disappear. The wiring is read from the model's serialized config
(`get_config()`: each layer's `inbound_nodes` name the layers it reads, with
their shapes), the public record of a functional model's graph that `.keras`
files store, rather than from Keras' private node bookkeeping.
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


def _op_for(layer, input_shapes):
  """Returns the graph operation for `layer`, or None for a pass-through."""
  name = layer.name
  if isinstance(layer, keras.layers.InputLayer):
    return graph_lib.Op(name, "input", [])
  if isinstance(layer, _PASS_THROUGH):
    return None
  in_shape = tuple(input_shapes[0][1:]) if input_shapes else ()
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


def _tensors_read(node):
  """`(layer name, shape)` of each Keras tensor a serialized call node reads, in order."""
  found = []

  def walk(value):
    if isinstance(value, dict):
      if value.get("class_name") == "__keras_tensor__":
        config = value["config"]
        found.append((config["keras_history"][0], tuple(config["shape"])))
      else:
        for item in value.values():
          walk(item)
    elif isinstance(value, (list, tuple)):
      for item in value:
        walk(item)

  walk(node.get("args", []))
  walk(node.get("kwargs", {}))
  return found


def _layer_name(entry):
  """The layer of an `input_layers`/`output_layers` entry: `[name, node, tensor]`."""
  return entry[0] if isinstance(entry[0], str) else entry[0][0]


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
  config = model.get_config()
  graph = graph_lib.Graph(f"Keras model {model.name!r}")
  alias = {}  # layer name -> name of the graph op standing for its output
  for entry in config["layers"]:
    layer = model.get_layer(entry["name"])
    nodes = entry["inbound_nodes"]
    if len(nodes) > 1:
      raise ValueError(f"Keras layer {layer.name!r} is called {len(nodes)} times; "
                       "expected once")
    inputs = _tensors_read(nodes[0]) if nodes else []
    sources = [alias[name] for name, _ in inputs]
    op = _op_for(layer, [shape for _, shape in inputs])
    if op is None:
      alias[layer.name] = sources[0] if sources else None
      continue
    op.inputs = sources
    alias[layer.name] = graph.add(op).name
  graph.output = alias[_layer_name(config["output_layers"])]
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
