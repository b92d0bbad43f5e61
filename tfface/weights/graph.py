"""A small layer-level graph that both sides of a weight import are reduced to.

The importer matches a source network (an ONNX graph, or an arcface_torch
state_dict) with a Keras backbone by structure. Both are first rewritten
into the same vocabulary of operations, so that matching compares like with
like:

| kind      | meaning                                   | params (source layout)         |
| --------- | ----------------------------------------- | ------------------------------ |
| `input`   | the image input                           |                                |
| `conv`    | 2-D convolution (grouped or depthwise)    | `weight` OIHW, `bias` optional |
| `bn`      | inference BatchNorm                       | `gamma`, `beta`, `mean`, `var` |
| `prelu`   | per-channel PReLU                         | `slope`                        |
| `add`     | element-wise sum of branches              |                                |
| `flatten` | collapse everything but the batch axis    |                                |
| `dense`   | fully connected                           | `weight` (out, in), `bias`     |

Padding, dropout, identity and the input normalization are not operations
here: padding becomes the `pads` attribute of the convolution that follows
it (top, left, bottom, right, as ONNX orders them), the others vanish.
"""
import collections
import dataclasses

# Kinds that carry weights; every one must be matched on both sides.
PARAMETRIC = ("conv", "bn", "prelu", "dense")
KINDS = ("input", "add", "flatten") + PARAMETRIC


@dataclasses.dataclass
class Op:
  """One operation of a `Graph`.

  Attributes:
    name: unique name (a Keras layer name or an ONNX node/value name).
    kind: one of `KINDS`.
    inputs: names of the producing operations, in argument order.
    attrs: structural attributes (`kernel`, `strides`, `pads`, `groups` for
      convolutions, `epsilon` for BatchNorm, `layer` on the Keras side).
    params: numpy arrays in the source layout (see the module docstring).
    tensors: for each key of `params`, the source tensor names it came
      from, so that error messages and the unmatched-tensor check can name
      them.
  """

  name: str
  kind: str
  inputs: list
  attrs: dict = dataclasses.field(default_factory=dict)
  params: dict = dataclasses.field(default_factory=dict)
  tensors: dict = dataclasses.field(default_factory=dict)

  def describe(self):
    """Returns `kind 'name'` plus the tensor names, for error messages."""
    names = sorted({n for group in self.tensors.values() for n in group})
    suffix = f" (tensors {', '.join(names)})" if names else ""
    return f"{self.kind} {self.name!r}{suffix}"


class Graph:
  """A DAG of `Op`s with one output, kept in topological (insertion) order."""

  def __init__(self, origin):
    """Creates an empty graph.

    Args:
      origin: what the graph was read from (a path or model name), used in
        error messages.
    """
    self.origin = origin
    self.ops = collections.OrderedDict()
    self.output = None

  def add(self, op):
    """Adds `op` after all existing operations and returns it.

    Raises:
      ValueError: if the name is taken or an input is unknown.
    """
    if op.name in self.ops:
      raise ValueError(f"{self.origin}: duplicate operation name {op.name!r}")
    missing = [i for i in op.inputs if i not in self.ops]
    if missing:
      raise ValueError(f"{self.origin}: {op.name!r} reads unknown {missing}")
    self.ops[op.name] = op
    return op

  def consumers(self):
    """Returns {name: [names of the operations that read it]}."""
    result = {name: [] for name in self.ops}
    for op in self.ops.values():
      for source in op.inputs:
        result[source].append(op.name)
    if self.output is not None:
      result[self.output].append(None)  # the graph output counts as a reader
    return result

  def bypass(self, name):
    """Removes a single-input operation, wiring its readers to its input."""
    op = self.ops.pop(name)
    (source,) = op.inputs
    for other in self.ops.values():
      other.inputs = [source if i == name else i for i in other.inputs]
    if self.output == name:
      self.output = source

  def insert_after(self, name, op):
    """Inserts `op` (whose input is `name`) between `name` and its readers."""
    readers = [o for o in self.ops.values() if name in o.inputs]
    for other in readers:
      other.inputs = [op.name if i == name else i for i in other.inputs]
    op.inputs = [name]
    # Keep topological order: place the new op right after its input.
    items = list(self.ops.items())
    position = [k for k, _ in items].index(name) + 1
    items.insert(position, (op.name, op))
    self.ops = collections.OrderedDict(items)
    if self.output == name:
      self.output = op.name

  def counts(self):
    """Returns the number of operations of each parametric kind."""
    counter = collections.Counter(op.kind for op in self.ops.values())
    return {kind: counter.get(kind, 0) for kind in PARAMETRIC + ("add",)}
