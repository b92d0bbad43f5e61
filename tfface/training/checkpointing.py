"""Checkpoints that survive a kill, the exported backbone, and `--pretrained` loading.

Workdir layout (other tools rely on it):

* `ckpt/`: `tf.train.CheckpointManager` files holding the backbone, the head
  and the optimizer (whose `iterations` is the step counter, and whose
  schedule is a function of it, so a restored run has the same learning
  rate). TensorFlow writes the data files first and the `checkpoint` index
  last, so a run killed mid-save restarts from the previous checkpoint.
* `ckpt/worker-W/`: each worker's own state for each kept checkpoint: the
  position of its input pipeline (so a resumed run continues the data
  stream exactly).
* `ckpt/partial_fc-N/`: with `head.partial_fc`, the class-centre shards and
  their momentum of checkpoint N, one file pair per replica, each written by
  the worker that holds it (tfface.training.partial_fc.checkpoint).
* `backbone.keras`: the backbone alone (raw RGB pixels in, un-normalized
  embedding out), rewritten atomically at every checkpoint;
  `best_backbone.keras` likewise for the best verification result.

Only the chief writes. Under MultiWorkerMirroredStrategy every worker still
runs the save (its variables may need the collective reads), the others into
a private temporary directory that is deleted right away.
"""
import json
import logging
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfface import atomic
from tfface.inference import loading

_LOG = logging.getLogger(__name__)
CKPT_DIR = "ckpt"
BACKBONE = "backbone.keras"
BEST_BACKBONE = "best_backbone.keras"
CONFIG = "config.json"


def save_keras_atomically(model, path: str):
  """Saves `model` to `path` via a temporary file in the same directory and a rename."""
  # Keras insists on the .keras suffix, so the temporary name keeps it.
  with atomic.replacing(path, suffix=".keras") as tmp:
    model.save(tmp)


def write_json_atomically(path: str, data):
  """Writes JSON through a temporary file and a rename."""
  atomic.write_json(path, data, indent=2, sync=True)


class Checkpointer:
  """Saves and restores the training state of a workdir.

  Two kinds of state:

  * the shared model state (backbone, head, optimizer and its step counter),
    identical on every worker: `ckpt/ckpt-N`, written by the chief;
  * each worker's own state (the position of its input pipeline; Partial FC
    class-centre shards), registered with `track_worker_state`:
    `ckpt/worker-W/ckpt-N` plus a JSON signature of what it was saved for,
    written by every worker into the (shared) workdir.

  A save writes the workers' state first, waits for every worker (`barrier`),
  then commits the shared checkpoint, whose index file TensorFlow writes
  last; so the newest committed checkpoint always has its workers' state.

  Args:
    workdir: the run's directory.
    backbone: the backbone model.
    head: the classification head layer (None for triplet training).
    optimizer: the (already built) optimizer.
    is_chief: whether this process writes the shared state.
    max_to_keep: checkpoints kept in `ckpt/`.
    worker_index: this worker's index (its state directory).
    barrier: callable run between the workers' state and the commit (a
      collective under MultiWorkerMirroredStrategy); None for one worker.
    partial_fc: the run's `PartialFC`, whose shards every worker saves
      into `ckpt/partial_fc-N/` (re-shardable onto another replica count).
  """

  def __init__(self, workdir, backbone, head, optimizer, is_chief=True, max_to_keep=3,
               worker_index=0, barrier=None, partial_fc=None):
    self.workdir = workdir
    self.backbone = backbone
    self.is_chief = is_chief
    objects = {"backbone": backbone, "optimizer": optimizer}
    if head is not None:
      objects["head"] = head
    self.checkpoint = tf.train.Checkpoint(**objects)
    self.directory = os.path.join(workdir, CKPT_DIR)
    self.worker_directory = os.path.join(self.directory, f"worker-{int(worker_index)}")
    self._barrier = barrier
    self._partial_fc = partial_fc
    self.partial_fc_note = ""  # how restore_latest re-sharded Partial FC, for the log
    self._keep = int(max_to_keep)
    self._worker = None
    self._scratch = None
    if not is_chief:
      self._scratch = tempfile.mkdtemp(prefix="tfface-worker-ckpt-")
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, self.directory if is_chief else self._scratch,
        max_to_keep=max_to_keep)

  def track_worker_state(self, signature, **objects):
    """Registers this worker's own trackable state (e.g. `iterator=...`).

    Args:
      signature: JSON-able dict describing what the state fits (batch,
        workers, data); a saved state with another signature is not restored.
      **objects: trackables saved and restored with every checkpoint.
    """
    self._worker = (tf.train.Checkpoint(**objects), dict(signature))

  @property
  def latest(self):
    """Path prefix of the newest checkpoint in `workdir/ckpt`, or None."""
    return tf.train.latest_checkpoint(self.directory)

  def restore_latest(self):
    """Restores the newest checkpoint of the workdir; returns its path or None.

    Partial FC's centres are restored with it, re-sharded if the checkpoint
    was written with another number of replicas.
    """
    path = self.latest
    if path:
      try:
        # Every tracked object exists already, so anything unmatched is an error.
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except (AssertionError, ValueError) as e:
        raise ValueError(
            f"{path}: this checkpoint does not fit the model of this run (another "
            f"--network, --loss or number of identities?); resume with the original "
            f"settings, or start a new --workdir (with --pretrained={self.workdir} "
            f"to reuse the backbone). Details: {str(e).splitlines()[0]}") from None
      if self._partial_fc is not None:
        step = int(path.rsplit("-", 1)[-1])
        self.partial_fc_note = self._partial_fc.restore(self.directory, step)
    return path

  def _worker_prefix(self, step):
    return os.path.join(self.worker_directory, f"ckpt-{int(step)}")

  def worker_state_mismatch(self, step, signature) -> str:
    """Why this worker's state of checkpoint `step` cannot serve a run of `signature`.

    Returns:
      "" when it is there and was saved for the same batch, worker count and
      data; else the reason, for the log.
    """
    prefix = self._worker_prefix(step)
    if not tf.io.gfile.exists(prefix + ".index"):
      return f"{prefix}: not found"
    try:
      with open(prefix + ".json") as f:
        saved = json.load(f)
    except (OSError, ValueError):
      saved = None
    if saved != signature:
      changed = sorted(k for k in set(signature) | set(saved or {})
                       if (saved or {}).get(k) != signature.get(k))
      return f"saved for another {', '.join(changed)}"
    return ""

  def restore_worker_state(self, step):
    """Restores the tracked state of this worker from checkpoint `step`.

    Check `worker_state_mismatch` first; every tracked object must be there.
    """
    checkpoint, _ = self._worker
    checkpoint.read(self._worker_prefix(step)).assert_consumed()

  def save(self, step: int):
    """Writes checkpoint `step`: workers' state, then the shared one, `backbone.keras`."""
    if self._worker is not None:
      checkpoint, signature = self._worker
      prefix = self._worker_prefix(step)
      os.makedirs(self.worker_directory, exist_ok=True)
      write_json_atomically(prefix + ".json", signature)
      checkpoint.write(prefix)
    if self._partial_fc is not None:
      self._partial_fc.save(self.directory, step)
    if self._barrier is not None:
      self._barrier()
    path = self.manager.save(checkpoint_number=step)
    if self._partial_fc is not None and self.is_chief:
      self._partial_fc.prune(self.directory, [int(p.rsplit("-", 1)[-1])
                                              for p in self.manager.checkpoints])
    if self.is_chief:
      save_keras_atomically(self.backbone, os.path.join(self.workdir, BACKBONE))
    else:
      shutil.rmtree(self._scratch, ignore_errors=True)
      os.makedirs(self._scratch, exist_ok=True)
    self._prune_worker_state()
    return path

  def _prune_worker_state(self):
    """Keeps this worker's states of the newest `max_to_keep` + 1 steps.

    By step number rather than by the chief's checkpoint list, which another
    worker may read before the chief has updated it; the one extra covers
    a commit still under way.
    """
    if self._worker is None or not os.path.isdir(self.worker_directory):
      return
    stems = {name.split(".", 1)[0] for name in os.listdir(self.worker_directory)}
    steps = sorted(int(stem[5:]) for stem in stems
                   if stem.startswith("ckpt-") and stem[5:].isdigit())
    old = {f"ckpt-{step}" for step in steps[:-(self._keep + 1)]}
    for name in os.listdir(self.worker_directory):
      if name.split(".", 1)[0] in old:
        os.remove(os.path.join(self.worker_directory, name))

  def save_best(self):
    """Writes `best_backbone.keras` (chief only)."""
    if self.is_chief:
      save_keras_atomically(self.backbone, os.path.join(self.workdir, BEST_BACKBONE))

  def close(self):
    if self._scratch:
      shutil.rmtree(self._scratch, ignore_errors=True)


def _backbone_from_checkpoint(prefix, backbone):
  status = tf.train.Checkpoint(backbone=backbone).read(prefix)
  # Head and optimizer values stay unread; every backbone weight must match.
  status.assert_existing_objects_matched()
  status.expect_partial()


def resolve_pretrained(path: str) -> tuple[str, str]:
  """What `--pretrained=path` names: `("keras", file)` or `("checkpoint", prefix)`.

  Raises:
    FileNotFoundError: nothing loadable at `path` (checked before a run
      writes its workdir).
  """
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, BACKBONE)):
    path = os.path.join(path, BACKBONE)
  if path.endswith(".keras"):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: no such .keras file (--pretrained)")
    return "keras", path
  prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
  if prefix is None and os.path.isdir(os.path.join(path, CKPT_DIR)):
    prefix = tf.train.latest_checkpoint(os.path.join(path, CKPT_DIR))
  if not prefix or not tf.io.gfile.exists(prefix + ".index"):
    hint = (" (a SavedModel export holds no training weights: pass the workdir it came "
            "from, or its backbone.keras)"
            if loading.is_saved_model(path) else "")
    raise FileNotFoundError(
        f"{path}: not a workdir with {BACKBONE}, a .keras file or a checkpoint "
        f"(--pretrained){hint}")
  return "checkpoint", prefix


def load_pretrained(path: str, backbone):
  """Copies pretrained backbone weights into `backbone` (built for the new run).

  Args:
    path: a workdir (uses its `backbone.keras`), a `.keras` file, a
      checkpoint directory (`WORKDIR/ckpt`) or a checkpoint prefix
      (`WORKDIR/ckpt/ckpt-2000`).
    backbone: the freshly built backbone of the new run; the head is never
      loaded, so the new run can have any number of identities.

  Returns:
    A description of what was loaded, for the log.

  Raises:
    FileNotFoundError: nothing loadable at `path`.
    ValueError: the pretrained backbone has a different architecture.
  """
  kind, found = resolve_pretrained(path)
  if kind == "keras":
    import tfface.models  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    source = keras.saving.load_model(found, compile=False)
    _copy_weights(source, backbone, found)
    return f"backbone weights from {found}"
  prefix = found
  try:
    _backbone_from_checkpoint(prefix, backbone)
  except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
    raise ValueError(f"{prefix}: its backbone does not fit the --network of this run "
                     f"({e})") from e
  return f"backbone weights from checkpoint {prefix}"


def _copy_weights(source, target, path):
  src, dst = source.weights, target.weights
  shapes_src = [tuple(w.shape) for w in src]
  shapes_dst = [tuple(w.shape) for w in dst]
  if shapes_src != shapes_dst:
    differ = next((f"; first difference: {d.path} is {b} here, {a} in the pretrained "
                   "backbone" for d, a, b in zip(dst, shapes_src, shapes_dst)
                   if a != b), "")
    raise ValueError(
        f"{path}: pretrained backbone {source.name!r} ({len(src)} weights) does not "
        f"match the {target.name!r} backbone of this run ({len(dst)} weights){differ}; "
        "check --network, --config.backbone.embedding_size and the backbone overrides")
  for s, d in zip(src, dst):
    d.assign(np.asarray(s.numpy(), dtype=d.dtype))
