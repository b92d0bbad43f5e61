"""arcface_torch module names for the layers of tfface's iresnet and MobileFaceNet.

A state_dict has no graph, only names; those of arcface_torch's backbones
follow its module tree, which tfface's layer names mirror (see the
docstrings of `tfface.models.iresnet` and `tfface.models.mobilefacenet`).
`module_name` translates one Keras layer name; `pair_state_dict` pulls each
layer's tensors out of a state_dict and reports every tensor left over and
every tensor missing.
"""
import re

import numpy as np

from tfface.weights import graph as graph_lib

# Tensors of a module, per kind of operation: (graph param key, torch suffix).
_TENSORS = {
    "conv": (("weight", "weight"), ("bias", "bias")),
    "bn": (("gamma", "weight"), ("beta", "bias"), ("mean", "running_mean"),
           ("var", "running_var")),
    "prelu": (("slope", "weight"),),
    "dense": (("weight", "weight"), ("bias", "bias")),
}
_OPTIONAL = {("conv", "bias"), ("dense", "bias")}
# Bookkeeping buffers that carry no weights.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
TORCH_BN_EPSILON = 1e-5  # nn.BatchNorm default; arcface_torch keeps it

_IRESNET = (
    (r"stem_conv", "conv1"), (r"stem_bn", "bn1"), (r"stem_prelu", "prelu"),
    (r"stage(\d+)_unit(\d+)_(bn1|conv1|bn2|prelu|conv2|bn3)",
     lambda s, u, n: f"layer{s}.{int(u) - 1}.{n}"),
    (r"stage(\d+)_unit(\d+)_shortcut_conv",
     lambda s, u: f"layer{s}.{int(u) - 1}.downsample.0"),
    (r"stage(\d+)_unit(\d+)_shortcut_bn",
     lambda s, u: f"layer{s}.{int(u) - 1}.downsample.1"),
    (r"head_bn", "bn2"), (r"head_fc", "fc"), (r"head_features", "features"),
)
# MobileFaceNet: units are Sequentials of (conv, bn[, prelu]) called `layers`;
# bottlenecks are Sequentials of (expand, dw, project) units.
_PART = {"conv": 0, "bn": 1, "prelu": 2}
_UNIT = {"expand": 0, "dw": 1, "project": 2}
_MBF = (
    (r"stem_(conv|bn|prelu)", lambda p: f"layers.0.layers.{_PART[p]}"),
    (r"stem_dw_(conv|bn|prelu)", lambda p: f"layers.1.layers.{_PART[p]}"),
    (r"stage0_block(\d+)_(expand|dw|project)_(conv|bn|prelu)",
     lambda k, u, p: f"layers.1.layers.{int(k) - 1}.layers.{_UNIT[u]}"
                     f".layers.{_PART[p]}"),
    (r"stage(\d+)_down_(expand|dw|project)_(conv|bn|prelu)",
     lambda s, u, p: f"layers.{2 * int(s)}.layers.{_UNIT[u]}.layers.{_PART[p]}"),
    (r"stage(\d+)_block(\d+)_(expand|dw|project)_(conv|bn|prelu)",
     lambda s, k, u, p: f"layers.{2 * int(s) + 1}.layers.{int(k) - 1}"
                        f".layers.{_UNIT[u]}.layers.{_PART[p]}"),
    (r"conv_sep_(conv|bn|prelu)", lambda p: f"conv_sep.layers.{_PART[p]}"),
    (r"gdc_conv", "features.layers.0.layers.0"),
    (r"gdc_bn", "features.layers.0.layers.1"),
    (r"head_fc", "features.layers.2"), (r"head_features", "features.layers.3"),
)
FAMILIES = {"iresnet": _IRESNET, "mbf": _MBF}


def family_of(network):
  """Returns "iresnet" or "mbf" for a backbone name, or None."""
  key = str(network).lower()
  if re.fullmatch(r"r\d+", key):
    return "iresnet"
  return "mbf" if key in ("mbf", "y1") else None


def module_name(family, layer_name):
  """Returns the arcface_torch module name of a tfface layer, or None."""
  for pattern, target in FAMILIES[family]:
    found = re.fullmatch(pattern, layer_name)
    if found:
      return target if isinstance(target, str) else target(*found.groups())
  return None


def pair_state_dict(keras_graph, state, family, path):
  """Pairs each parametric Keras op with its tensors in an arcface_torch state_dict.

  Args:
    keras_graph: the backbone's graph (`keras_graph.keras_graph`).
    state: {name: numpy array} from `sources.read_state_dict`.
    family: "iresnet" or "mbf".
    path: the state_dict's file, for messages.

  Returns:
    (keras op, source op) pairs whose source ops hold the tensors in the
    PyTorch layout, with BatchNorm epsilon 1e-5.

  Raises:
    ValueError: listing every tensor missing for a Keras layer and every
      tensor of the state_dict that no layer took.
  """
  pairs, taken, errors = [], set(), []
  for kop in keras_graph.ops.values():
    if kop.kind not in graph_lib.PARAMETRIC:
      continue
    module = module_name(family, kop.name)
    if module is None:
      errors.append(f"Keras layer {kop.name!r} has no arcface_torch counterpart")
      continue
    sop = graph_lib.Op(module, kop.kind, [], {"epsilon": TORCH_BN_EPSILON})
    for key, suffix in _TENSORS[kop.kind]:
      name = f"{module}.{suffix}"
      if name in state:
        sop.params[key] = np.asarray(state[name], np.float32)
        sop.tensors[key] = frozenset([name])
        taken.add(name)
      elif (kop.kind, key) not in _OPTIONAL:
        errors.append(f"missing tensor {name!r} for Keras layer {kop.name!r}")
    pairs.append((kop, sop))
  left = sorted(n for n in state if n not in taken
                and not n.endswith(_IGNORED_SUFFIXES))
  errors += [f"tensor {n!r} {tuple(np.shape(state[n]))} matches no Keras layer"
             for n in left]
  if errors:
    raise ValueError(f"{path}: the state_dict does not fit {keras_graph.origin}:"
                     "\n  - " + "\n  - ".join(errors))
  return pairs
