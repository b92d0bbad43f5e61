"""Opens the files the importer reads: ONNX models and PyTorch state_dicts.

Both readers need optional packages (`onnx`, `torch`); they are imported
only here and only when such a file is read, so tfface itself never depends
on them. A missing package, a missing file or a file of the wrong kind is a
`ValueError` / `OSError` naming the file.
"""
import os
import pickle
import zipfile

import numpy as np

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar")
# Keys under which training scripts commonly nest the backbone's state_dict.
_NESTED_KEYS = ("state_dict", "model", "backbone", "model_state_dict")
# Prefixes that wrappers (DistributedDataParallel, torch.compile) add.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def source_format(path):
  """Returns "onnx" or "torch" from the file name.

  Raises:
    ValueError: for any other suffix.
  """
  lower = str(path).lower()
  if lower.endswith(ONNX_SUFFIXES):
    return "onnx"
  if lower.endswith(TORCH_SUFFIXES):
    return "torch"
  raise ValueError(f"{path}: unknown weight file type; expected an ONNX model "
                   f"({', '.join(ONNX_SUFFIXES)}) or a PyTorch state_dict "
                   f"({', '.join(TORCH_SUFFIXES)})")


def _require_file(path):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")


def read_onnx(path):
  """Loads an ONNX model (with any external data next to it).

  Args:
    path: the `.onnx` file.

  Returns:
    An `onnx.ModelProto`.

  Raises:
    ValueError: if the `onnx` package is missing or the file is not ONNX.
    OSError: if the file cannot be read.
  """
  _require_file(path)
  try:
    import onnx  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError(f"{path}: reading ONNX models needs the `onnx` package "
                     "(pip install 'tfface[onnx]')") from e
  try:
    return onnx.load(str(path))
  except OSError:
    raise
  except Exception as e:  # protobuf raises its own DecodeError types
    raise ValueError(f"{path}: not a readable ONNX model ({e})") from e


def _unwrap(obj, path):
  """Finds the {name: tensor} mapping inside what `torch.load` returned."""
  import torch  # pylint: disable=import-outside-toplevel
  for _ in range(3):  # checkpoints nest the state_dict at most a level or two
    if isinstance(obj, dict) and obj and all(
        isinstance(v, torch.Tensor) for v in obj.values()):
      return obj
    if isinstance(obj, dict):
      nested = [k for k in _NESTED_KEYS if isinstance(obj.get(k), dict)]
      if nested:
        obj = obj[nested[0]]
        continue
    break
  raise ValueError(f"{path}: expected a state_dict (a dict of tensors, as "
                   "torch.save(model.state_dict()) writes); found "
                   f"{type(obj).__name__}")


def read_state_dict(path):
  """Loads a PyTorch state_dict as numpy arrays, without running any pickle code.

  Args:
    path: a `.pth` / `.pt` file written by `torch.save(model.state_dict())`
      (a checkpoint dict holding one under `state_dict` / `model` also works).

  Returns:
    {parameter name: numpy array}, with DistributedDataParallel's `module.`
    prefix removed.

  Raises:
    ValueError: if `torch` is missing or the file holds something else.
    OSError: if the file cannot be read.
  """
  _require_file(path)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError(f"{path}: reading PyTorch .pth files needs `torch` "
                     "(pip install 'tfface[torch]'), or export the model to "
                     "ONNX and import the .onnx file") from e
  # torch.save writes a zip archive (or, before PyTorch 1.6, a pickle, which
  # starts with the PROTO opcode); anything else is not a checkpoint at all.
  with open(path, "rb") as f:
    first = f.read(1)
  if first != b"\x80" and not zipfile.is_zipfile(path):
    raise ValueError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a "
                     "pickle)")
  try:
    # weights_only: a state_dict needs no code, so none is allowed to run.
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
  except OSError:
    raise
  except pickle.UnpicklingError as e:  # weights_only refused an object
    raise ValueError(f"{path}: holds pickled Python objects (a whole model?), "
                     "not only tensors, and loading them would run their code; "
                     "save the backbone with torch.save(model.state_dict(), "
                     "path)") from e
  except Exception as e:  # zip and format errors come in many types
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f"{path}: not a readable PyTorch file ({first_line})") from e
  state = _unwrap(obj, path)
  result = {}
  for name, tensor in state.items():
    for prefix in _WRAPPER_PREFIXES:
      if name.startswith(prefix):
        name = name[len(prefix):]
    value = tensor.detach().cpu()
    result[name] = (value.float() if value.is_floating_point() else value).numpy()
  return {k: np.asarray(v) for k, v in result.items()}
