"""Partial FC shard files: written per replica, read back under any sharding.

The sharded class centres and their momentum are not in the main
`tf.train.Checkpoint` (a replica's variables exist on its device only, and
a run may resume on another replica count), but beside it:

    CKPT_DIR/partial_fc-STEP/shard-RRRRR-of-NNNNN.json
    CKPT_DIR/partial_fc-STEP/shard-RRRRR-of-NNNNN-kernel.npy     [rows, D] float32
    CKPT_DIR/partial_fc-STEP/shard-RRRRR-of-NNNNN-momentum.npy   [rows, D] float32

Each shard's two arrays are written (and fsynced) under temporary names and
renamed, then its JSON (classes, rows, embedding width), which marks the
shard complete. A step is complete when the JSONs of one sharding cover
`[0, num_classes)`. Readers map the `.npy` files and copy only the rows they
need, so a shard of any new sharding reads just its own rows.

Under MultiWorkerMirroredStrategy every worker writes its own shards, so
`CKPT_DIR` must be on storage that all workers share (as the workdir
already must be).
"""
import glob
import json
import os
import re
import shutil

import numpy as np

from tfface import atomic

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^partial_fc-(\d+)$")
_SHARD = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")


def step_directory(ckpt_dir: str, step: int) -> str:
  """`CKPT_DIR/partial_fc-STEP`: where the shards of checkpoint `step` live."""
  return os.path.join(ckpt_dir, f"partial_fc-{int(step)}")


def _stem(shard: int, num_shards: int) -> str:
  return f"shard-{shard:05d}-of-{num_shards:05d}"


def _save_npy(path: str, array: np.ndarray):
  with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
    np.save(f, array)
    f.flush()
    os.fsync(f.fileno())


def write_shard(ckpt_dir: str, step: int, shard: int, num_shards: int, rows: tuple,
                num_classes: int, kernel: np.ndarray, momentum: np.ndarray):
  """Writes one shard of checkpoint `step` (arrays first, its JSON last).

  Files of another sharding left in the step directory (a run killed while
  saving this step, then resumed on another replica count) are removed
  first; files of this sharding are overwritten shard by shard.

  Args:
    ckpt_dir: the checkpoint directory (shared by all workers).
    step: the training step.
    shard: global replica index of the shard.
    num_shards: replicas in sync.
    rows: `(start, stop)` classes of the shard.
    num_classes: identities in all.
    kernel: float32 [stop - start, D] class centres.
    momentum: float32 [stop - start, D] SGD momentum.
  """
  directory = step_directory(ckpt_dir, step)
  os.makedirs(directory, exist_ok=True)
  for path in glob.glob(os.path.join(directory, "shard-*")):
    match = re.match(r"^shard-\d+-of-(\d+)", os.path.basename(path))
    if match and int(match.group(1)) != num_shards:
      try:
        os.remove(path)
      except FileNotFoundError:
        pass  # another worker removed it first
  stem = _stem(shard, num_shards)
  start, stop = int(rows[0]), int(rows[1])
  for name, array in (("kernel", kernel), ("momentum", momentum)):
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.shape[0] != stop - start:
      raise ValueError(f"{stem}-{name}: {array.shape[0]} rows for classes "
                       f"[{start}, {stop})")
    _save_npy(os.path.join(directory, f"{stem}-{name}.npy"), array)
  atomic.write_json(os.path.join(directory, f"{stem}.json"), {
      "format": FORMAT_VERSION, "step": int(step), "num_classes": int(num_classes),
      "embedding_size": int(kernel.shape[1]), "start": start, "stop": stop,
      "shard": int(shard), "num_shards": int(num_shards),
      "kernel": f"{stem}-kernel.npy", "momentum": f"{stem}-momentum.npy"},
      indent=2, sync=True)


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: unreadable Partial FC shard description ({e})") from e


def shards(ckpt_dir: str, step: int):
  """The complete set of shard descriptions of checkpoint `step`, or None.

  Returns:
    A list of dicts (the JSON files, plus `"directory"`), sorted by `start`,
    whose rows cover `[0, num_classes)` once; None when no sharding of this
    step is complete. If a step directory holds two complete shardings, the
    most recently written one wins.
  """
  directory = step_directory(ckpt_dir, step)
  groups = {}
  for path in glob.glob(os.path.join(directory, "shard-*.json")):
    match = _SHARD.match(os.path.basename(path))
    if match:
      groups.setdefault(int(match.group(2)), []).append(path)
  complete = []
  for num_shards, paths in groups.items():
    if len(paths) != num_shards:
      continue
    infos = sorted((_read_json(p) for p in paths), key=lambda info: info["start"])
    if _covers(infos):
      newest = max(os.path.getmtime(p) for p in paths)
      complete.append((newest, infos))
  if not complete:
    return None
  infos = max(complete, key=lambda item: item[0])[1]
  for info in infos:
    info["directory"] = directory
  return infos


def _covers(infos):
  """True when consecutive shards tile `[0, num_classes)` with one description."""
  expected = 0
  for info in infos:
    if (info.get("format") != FORMAT_VERSION or info["start"] != expected or
        info["num_classes"] != infos[0]["num_classes"] or
        info["embedding_size"] != infos[0]["embedding_size"]):
      return False
    expected = info["stop"]
  return expected == infos[0]["num_classes"]


def complete_steps(ckpt_dir: str) -> list:
  """Steps (ascending) whose Partial FC shards are all present in `ckpt_dir`."""
  steps = []
  if os.path.isdir(ckpt_dir):
    for name in os.listdir(ckpt_dir):
      match = _STEP_DIR.match(name)
      if match and shards(ckpt_dir, int(match.group(1))) is not None:
        steps.append(int(match.group(1)))
  return sorted(steps)


def latest_complete_step(ckpt_dir: str):
  """The newest step whose Partial FC shards are all present, or None."""
  steps = complete_steps(ckpt_dir)
  return steps[-1] if steps else None


def read_rows(ckpt_dir: str, step: int, start: int, stop: int, num_classes: int,
              embedding_size: int):
  """Rows `[start, stop)` of the kernel and momentum saved at `step`.

  Only the rows asked for are read from the memory-mapped shard files.

  Args:
    ckpt_dir: the checkpoint directory.
    step: the checkpoint's step.
    start: first class wanted.
    stop: one past the last class wanted.
    num_classes: identities of the current run (must equal the saved one).
    embedding_size: embedding width of the current run (likewise).

  Returns:
    `(kernel, momentum)`, float32 numpy arrays [stop - start, embedding_size].

  Raises:
    ValueError: the step is incomplete, or saved for another number of
      classes or embedding width, or a file does not hold what its JSON says.
  """
  infos = shards(ckpt_dir, step)
  directory = step_directory(ckpt_dir, step)
  if infos is None:
    raise ValueError(f"{directory}: no complete set of Partial FC shards for step {step}")
  saved = (infos[0]["num_classes"], infos[0]["embedding_size"])
  if saved != (num_classes, embedding_size):
    raise ValueError(
        f"{directory}: Partial FC shards hold {saved[0]} classes x {saved[1]} features, "
        f"this run has {num_classes} x {embedding_size}; resume with the original "
        f"data and --config.backbone.embedding_size")
  out = {name: np.empty((stop - start, embedding_size), np.float32)
         for name in ("kernel", "momentum")}
  for info in infos:
    lo, hi = max(start, info["start"]), min(stop, info["stop"])
    if lo >= hi:
      continue
    for name, array in out.items():
      path = os.path.join(directory, info[name])
      saved_rows = np.load(path, mmap_mode="r")
      expected = (info["stop"] - info["start"], embedding_size)
      if saved_rows.shape != expected or saved_rows.dtype != np.float32:
        raise ValueError(f"{path}: expected float32 {expected}, found "
                         f"{saved_rows.dtype} {saved_rows.shape}")
      array[lo - start:hi - start] = saved_rows[lo - info["start"]:hi - info["start"]]
  return out["kernel"], out["momentum"]


def prune(ckpt_dir: str, keep_steps):
  """Deletes the Partial FC shards of steps older than the newest kept one.

  Call it on one worker (the chief), after every worker has saved, with the
  steps whose main checkpoints are kept. Steps newer than all of
  `keep_steps` are left alone: another worker may still be writing them.

  Args:
    ckpt_dir: the checkpoint directory.
    keep_steps: steps to keep (e.g. those of `CheckpointManager.checkpoints`).

  Returns:
    The steps removed.
  """
  keep = {int(s) for s in keep_steps}
  if not keep or not os.path.isdir(ckpt_dir):
    return []
  removed = []
  for name in os.listdir(ckpt_dir):
    match = _STEP_DIR.match(name)
    if match and int(match.group(1)) not in keep and int(match.group(1)) < max(keep):
      shutil.rmtree(os.path.join(ckpt_dir, name), ignore_errors=True)
      removed.append(int(match.group(1)))
  return sorted(removed)


def read_kernel(ckpt_dir: str, step=None) -> np.ndarray:
  """The full `[C, D]` class-centre matrix of a Partial FC checkpoint.

  For inspection and for fine-tuning from it (`PartialFC.set_kernel`, or a
  replicated `MarginHead`'s kernel).

  Args:
    ckpt_dir: the checkpoint directory (e.g. `WORKDIR/ckpt`).
    step: the step; the newest complete one by default.

  Raises:
    ValueError: no complete Partial FC checkpoint there.
  """
  step = latest_complete_step(ckpt_dir) if step is None else step
  infos = None if step is None else shards(ckpt_dir, step)
  if infos is None:
    raise ValueError(f"{ckpt_dir}: no complete Partial FC checkpoint"
                     + ("" if step is None else f" for step {step}"))
  num_classes, embedding_size = infos[0]["num_classes"], infos[0]["embedding_size"]
  return read_rows(ckpt_dir, step, 0, num_classes, num_classes, embedding_size)[0]
