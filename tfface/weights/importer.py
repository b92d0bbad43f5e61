"""Imports InsightFace pretrained weights into tfface backbones.

Two kinds of source:

* ONNX models (InsightFace's model zoo, e.g. `w600k_r50.onnx`,
  `glintr100.onnx`, or any `torch.onnx.export` of an arcface_torch
  backbone): the graph is matched with the Keras backbone by structure
  (`matching`), so renamed or constant-folded weights import as well.
* arcface_torch `state_dict` files (`backbone.pth`): matched by module name
  (`torch_names`); needs `torch`.

The imported model takes raw RGB pixels like every tfface model; the
preprocessing the source expects lives in its `normalize` layer: the
normalization found at the start of an ONNX graph (MXNet exports subtract
127.5 and multiply by 1/128 in the graph), otherwise arcface_torch's
(x - 127.5) / 127.5.
"""
import os

from tfface import atomic
from tfface import models
from tfface.weights import keras_graph as keras_graph_lib
from tfface.weights import mapping
from tfface.weights import matching
from tfface.weights import onnx_graph
from tfface.weights import sources
from tfface.weights import torch_names

# arcface_torch trains on (x - 127.5) / 127.5 of RGB pixels; its ONNX
# exports leave that to the caller (InsightFace's model_zoo assumes it).
ARCFACE_TORCH_MEAN = 127.5
ARCFACE_TORCH_STD = 127.5


def _read(source, network):
  """Reads the source; returns (format, graph or state, info)."""
  kind = sources.source_format(source)
  if kind == "onnx":
    graph, info = onnx_graph.read_graph(sources.read_onnx(source), source)
    denses = [op for op in graph.ops.values() if op.kind == "dense"]
    info["embedding_size"] = denses[-1].params["weight"].shape[0] if denses else None
    return kind, graph, info
  family = torch_names.family_of(network)
  if family is None:
    raise ValueError(f"{source}: arcface_torch state_dicts can be imported into "
                     f"r18/r34/r50/r100/r200 and mbf; got network={network!r} "
                     "(import an ONNX export instead)")
  state = sources.read_state_dict(source)
  fc = "fc.weight" if family == "iresnet" else "features.layers.2.weight"
  info = {"preprocessing": None, "epsilon": torch_names.TORCH_BN_EPSILON,
          "input_shape": None, "unused_tensors": [], "family": family,
          "embedding_size": state[fc].shape[0] if fc in state else None}
  return kind, state, info


def _build(network, embedding_size, info, input_mean, input_std, overrides):
  """Builds the backbone with the source's preprocessing and BN epsilon."""
  found = info["preprocessing"]
  if input_mean is None:
    input_mean = found["mean"] if found else ARCFACE_TORCH_MEAN
  if input_std is None:
    input_std = found["std"] if found else ARCFACE_TORCH_STD
  options = dict(overrides)
  shape = info["input_shape"]
  if "input_shape" not in options and shape and None not in shape[2:]:
    options["input_shape"] = (shape[2], shape[3], 3)
  if embedding_size is None:
    embedding_size = info["embedding_size"] or 512
  model = models.build_backbone(
      network, embedding_size=embedding_size, input_mean=input_mean,
      input_std=input_std, bn_epsilon=info["epsilon"] or 1e-5, **options)
  return model, {"input_mean": float(input_mean), "input_std": float(input_std)}


def import_with_report(source, network, embedding_size=512, input_mean=None,
                       input_std=None, **overrides):
  """Like `import_weights`, and also returns what was found and done.

  Args:
    source, network, embedding_size, input_mean, input_std, **overrides: as
      for `import_weights`.

  Returns:
    (model, report): the Keras model and a dict with `source`, `format`,
    `network`, `embedding_size`, `input_mean`, `input_std`,
    `normalization` (where the mean/std came from), `bn_epsilon`,
    `tensors` (distinct source tensors written) and `identity_batchnorms`
    (Keras BatchNorms set to identity form because the source had folded
    them away: conv biases, Mul + Add pairs).

  Raises:
    ValueError, OSError: as `import_weights`.
  """
  source = os.fspath(source)
  kind, data, info = _read(source, network)
  model, report = _build(network, embedding_size, info, input_mean, input_std,
                         overrides)
  graph = keras_graph_lib.keras_graph(model)
  if kind == "onnx":
    pairs = matching.match(graph, data)
  else:
    pairs = torch_names.pair_state_dict(graph, data, info["family"], source)
  unused = [f"tensor {name!r} feeds no layer" for name in info["unused_tensors"]]
  try:
    written = mapping.assign(pairs, graph, errors=unused)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from e
  if input_mean is not None or input_std is not None:
    origin = "given by the caller"
  elif info["preprocessing"]:
    origin = "found in the ONNX graph"
  else:
    origin = "arcface_torch's default, as the source stores none"
  report.update(
      source=source, format=kind, network=model.name,
      embedding_size=int(model.outputs[0].shape[-1]), normalization=origin,
      bn_epsilon=info["epsilon"], tensors=written,
      identity_batchnorms=sum(1 for _, sop in pairs
                              if sop.attrs.get("synthetic")))
  return model, report


def import_weights(source, network, embedding_size=512, input_mean=None,
                   input_std=None, **overrides):
  """Builds a tfface backbone holding the weights of an InsightFace model.

  Example:

    model = import_weights("w600k_r50.onnx", "r50")
    embeddings = model(rgb_images_0_to_255)  # [B, 512], as the ONNX model

  Args:
    source: an `.onnx` model or an arcface_torch `.pth` state_dict.
    network: the tfface backbone name (r18, r34, r50, r100, r200, mbf, ...).
    embedding_size: width of the embedding; None takes it from the source.
    input_mean: overrides the pixel mean the source expects.
    input_std: overrides the pixel std the source expects.
    **overrides: further `build_backbone` options for non-standard sources
      (e.g. `units`, `widths`, `blocks_per_stage`, `scale`).

  Returns:
    A `keras.Model` from raw RGB pixels (NHWC, 0-255) to the source's
    embedding.

  Raises:
    ValueError: listing every tensor left unmatched, every shape that
      differs, or the first place where the structures differ.
    OSError: if the file cannot be read.
  """
  return import_with_report(source, network, embedding_size, input_mean,
                            input_std, **overrides)[0]


def convert(source, output, network, embedding_size=512, input_mean=None,
            input_std=None, **overrides):
  """Imports `source` and saves the model as a `.keras` file.

  The file is written under a temporary name and renamed when complete.

  Args:
    source: an `.onnx` model or an arcface_torch `.pth` state_dict.
    output: the `.keras` file to write.
    network, embedding_size, input_mean, input_std, **overrides: as for
      `import_weights`.

  Returns:
    The report of `import_with_report`, plus `output`.

  Raises:
    ValueError: as `import_weights`, or if `output` does not end in .keras.
    OSError: if a file cannot be read or written.
  """
  output = os.fspath(output)
  if not output.endswith(".keras"):
    raise ValueError(f"{output}: the output must be a .keras file")
  model, report = import_with_report(source, network, embedding_size,
                                     input_mean, input_std, **overrides)
  with atomic.replacing(output, suffix=".keras", make_dirs=True) as tmp:
    model.save(tmp)
  report["output"] = output
  return report
