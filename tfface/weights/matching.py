"""Pairs the operations of a Keras backbone graph with those of a source graph.

The walk starts at both outputs and moves towards the inputs, one pair of
operations at a time; each pair must agree in kind and in structure
(kernel size, strides, padding, grouped or not). Names and node order play
no part, so a graph whose exporter renamed every weight (`onnx::Conv_683`)
or emitted the shortcut before the main branch still matches.

The only choice is at an `add`: which input of the Keras add corresponds to
which input of the source add. Each branch is described by the kinds of
operations along it back to the point where it forks from the other branch
(the identity shortcut of a ResNet unit is empty, the main branch is
bn-conv-bn-prelu-conv-bn, the projection shortcut conv-bn), and branches
are paired by that description.
"""
from tfface.weights import graph as graph_lib

# How far to look along a branch when telling the inputs of an add apart.
_SIGNATURE_LENGTH = 64


def _signature(graph, name, readers):
  """Kinds along a branch until an add, the input, or a fork; a tuple."""
  kinds = []
  while len(kinds) < _SIGNATURE_LENGTH:
    op = graph.ops[name]
    if op.kind in ("add", "input") or len(readers[name]) != 1 or len(op.inputs) != 1:
      kinds.append(op.kind + ("+fork" if len(readers[name]) > 1 else ""))
      break
    kinds.append(op.kind)
    name = op.inputs[0]
  return tuple(kinds)


def _structure(op):
  """What must agree between two paired operations, besides their kind."""
  if op.kind != "conv":
    return {}
  return {"kernel": tuple(op.attrs["kernel"]),
          "strides": tuple(op.attrs["strides"]),
          "pads": tuple(op.attrs["pads"]),
          # Exact group counts follow the widths; a wrong width is reported
          # as a weight-shape mismatch, so only "grouped or not" is structure.
          "grouped": op.attrs["groups"] > 1}


class _Matcher:
  """Holds both graphs and their reader maps during one match."""

  def __init__(self, keras_graph, source_graph):
    self.keras, self.source = keras_graph, source_graph
    self.keras_readers = keras_graph.consumers()
    self.source_readers = source_graph.consumers()
    self.pairs, self.claimed = {}, {}

  def fail(self, keras_name, source_name, reason):
    kop, sop = self.keras.ops[keras_name], self.source.ops[source_name]
    raise ValueError(
        f"{self.source.origin}: the source network does not have the structure "
        f"of {self.keras.origin}: Keras layer {keras_name!r} ({kop.kind}) "
        f"meets source {sop.describe()}: {reason}. Operations in the model: "
        f"{self.keras.counts()}; in the source: {self.source.counts()} "
        "(check --network and the backbone options)")

  def branch_pairs(self, kop, sop):
    """Pairs the inputs of two add operations by their branch signatures."""
    if len(kop.inputs) != len(sop.inputs):
      self.fail(kop.name, sop.name, f"adds of {len(kop.inputs)} and "
                f"{len(sop.inputs)} inputs")
    keras_sigs = [(_signature(self.keras, n, self.keras_readers), n)
                  for n in kop.inputs]
    source_sigs = [(_signature(self.source, n, self.source_readers), n)
                   for n in sop.inputs]
    # Stable sorts: identical branches keep their argument order.
    keras_sigs.sort(key=lambda item: item[0])
    source_sigs.sort(key=lambda item: item[0])
    if [s for s, _ in keras_sigs] != [s for s, _ in source_sigs]:
      self.fail(kop.name, sop.name, "the added branches differ: Keras "
                f"{[s for s, _ in keras_sigs]}, source "
                f"{[s for s, _ in source_sigs]}")
    return [(k, s) for (_, k), (_, s) in zip(keras_sigs, source_sigs)]

  def run(self):
    stack = [(self.keras.output, self.source.output)]
    while stack:
      k, s = stack.pop()
      if k in self.pairs or s in self.claimed:
        if self.pairs.get(k) != s:
          self.fail(k, s, "reached a second time along a different path")
        continue
      kop, sop = self.keras.ops[k], self.source.ops[s]
      if kop.kind != sop.kind:
        self.fail(k, s, "different kinds of operation")
      if _structure(kop) != _structure(sop):
        self.fail(k, s, f"Keras {_structure(kop)} vs source {_structure(sop)}")
      self.pairs[k], self.claimed[s] = s, k
      if kop.kind == "add":
        stack.extend(self.branch_pairs(kop, sop))
      elif len(kop.inputs) == len(sop.inputs):
        stack.extend(zip(kop.inputs, sop.inputs))
      else:
        self.fail(k, s, "different numbers of inputs")
    return self.pairs


def match(keras_graph, source_graph):
  """Pairs every operation of `keras_graph` with one of `source_graph`.

  Args:
    keras_graph: the backbone's graph (`keras_graph.keras_graph`).
    source_graph: the source's graph (`onnx_graph.read_graph`).

  Returns:
    A list of (keras op, source op) pairs for the parametric operations,
    in the Keras graph's order.

  Raises:
    ValueError: at the first place where the structures differ, naming the
      Keras layer and the source node, or if operations are left unpaired.
  """
  pairs = _Matcher(keras_graph, source_graph).run()
  left = [f"Keras layer {op.name!r} ({op.kind})"
          for op in keras_graph.ops.values() if op.name not in pairs]
  claimed = set(pairs.values())
  left += [f"source {op.describe()}" for op in source_graph.ops.values()
           if op.name not in claimed]
  if left:
    raise ValueError(f"{source_graph.origin}: operations that are not on the "
                     "path from input to output of the other network:\n  - "
                     + "\n  - ".join(left))
  return [(op, source_graph.ops[pairs[op.name]])
          for op in keras_graph.ops.values() if op.kind in graph_lib.PARAMETRIC]
