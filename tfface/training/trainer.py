"""The training loop: `train(config, workdir)` is what `tools/train.py` runs.

A custom loop rather than `model.fit`: the margin head needs the labels in
its forward pass, the head and the exported backbone are saved separately,
verification on `.bin` files runs between steps, and a NaN must stop the run
before anything is written. Steps run in compiled loops (`loop.TrainLoop`,
`steps_per_loop` steps per host round trip, XLA replica steps); a loop ends
at every step where the host has something to do: log, checkpoint, verify,
the end of `freeze_backbone_steps` or of `margin_warmup`.

Resumption: the step counter is the optimizer's `iterations`, restored with
the checkpoint, and the learning rate is a function of it. The checkpoint
also holds each worker's input position, so a resumed run trains on exactly
the data an uninterrupted one would (in deterministic input mode, record for
record) after reading only the shards' headers.

Bad data: shard sizes are checked against the manifest before anything slow;
a corrupt record (TensorFlow's `DataLossError`, which names no file) is
located and reported as one line naming the shard and its byte offset.
"""
import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

from tfface.data.tfrecord import integrity
from tfface.input import pipeline
from tfface.training import checkpointing
from tfface.training import config as config_lib
from tfface.training import datasets
from tfface.training import loop as loop_lib
from tfface.training import strategy as strategy_lib
from tfface.training import summaries
from tfface.training import task as task_lib
from tfface.training import verifier as verifier_lib


class NonFiniteLossError(FloatingPointError, ValueError):
  """The loss became NaN or Inf; the run stopped without writing anything further."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C during training; the message names the checkpoint to resume from."""


@dataclasses.dataclass
class TrainResult:
  """How a run ended."""

  workdir: str
  step: int
  resumed_from: str | None
  loss: float | None
  accuracy_before: float | None = None
  accuracy_after: float | None = None
  skipped_records: int = 0
  weights_sha256: str = ""


@dataclasses.dataclass
class _Plan:
  """Numbers resolved at start from the config, the manifest and the strategy."""

  num_classes: int
  num_images: int
  image_size: tuple
  replicas: int
  global_batch: int
  total_steps: int
  peak_lr: float


def _plan(config, manifest, replicas):
  if config.num_classes is not None and config.num_classes != manifest.num_classes:
    raise ValueError(
        f"{config.data_dir}/manifest.json: the data has {manifest.num_classes} identities "
        f"but the config sets num_classes={config.num_classes}; labels must lie in "
        f"[0, num_classes): drop --config.num_classes or fix the data")
  global_batch = config.batch_size * replicas
  if config.loss == "triplet":
    from tfface.input import sampler  # pylint: disable=g-import-not-at-top
    sampler.check_batch(config.batch_size, config.triplet.images_per_identity)
  return _Plan(
      num_classes=manifest.num_classes, num_images=manifest.num_images,
      image_size=tuple(manifest.image_size or (112, 112)), replicas=replicas,
      global_batch=global_batch,
      total_steps=config_lib.total_steps(config, manifest.num_images, global_batch),
      peak_lr=config_lib.learning_rate(config, global_batch))


def _config_record(config, plan):
  """What `WORKDIR/config.json` holds: the config and the numbers resolved at start."""
  data = json.loads(config.to_json())
  data["resolved"] = dataclasses.asdict(plan)
  return data


def _write_config(workdir, config, plan):
  checkpointing.write_json_atomically(os.path.join(workdir, checkpointing.CONFIG),
                                      _config_record(config, plan))


# What a workdir's checkpoints were trained as: resuming with another value
# would continue them as something else. The variables alone cannot tell
# (ArcFace and CosFace heads have the same ones), so config.json is compared.
_RESUME_FIELDS = ("network", "backbone", "loss", "head.partial_fc", "resolved.num_classes")


def _field(data, dotted):
  for part in dotted.split("."):
    data = data.get(part) if isinstance(data, dict) else None
  return data


def _check_resume_config(workdir, config, plan):
  """Refuses to resume a workdir's checkpoints as another model, loss or head.

  Call it only for a workdir that holds a checkpoint.

  Raises:
    ValueError: the workdir's config.json names another network, backbone,
      loss, Partial FC setting or number of identities than this run; the
      message says how to go on.
  """
  path = os.path.join(workdir, checkpointing.CONFIG)
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return  # none (tfface 0.1) or unreadable: the checkpoint's own check still applies
  data = _config_record(config, plan)
  for dotted in _RESUME_FIELDS:
    before, now = _field(saved, dotted), _field(data, dotted)
    if before is not None and before != now:
      raise ValueError(
          f"{path}: this workdir was trained with {dotted}={json.dumps(before)}; this run "
          f"has {dotted}={json.dumps(now)}; resume with the original settings, or start a "
          f"new --workdir (with --pretrained={workdir} to reuse the backbone)")


def _input_options(config, reseed_at=0):
  seed = config.seed
  if reseed_at and not config.input.deterministic:
    # No saved position to continue from: a fresh order instead of replaying.
    seed = config.seed + reseed_at
  return pipeline.InputOptions(
      shuffle=config.input.shuffle, shuffle_buffer=config.input.shuffle_buffer,
      random_flip=config.input.random_flip, deterministic=config.input.deterministic,
      seed=seed,
      images_per_identity=(config.triplet.images_per_identity
                           if config.loss == "triplet" else None))


def _label_error(error, data_dir):
  """Turns the pipeline's label assertion into a one-line ValueError, else None."""
  message = getattr(error, "message", str(error))
  for line in message.splitlines():
    if pipeline.LABEL_ERROR in line:
      text = line.split("assertion failed:", 1)[-1].strip()
      return ValueError(text.replace("] [", " ").strip("[] "))
  return None


def _data_loss_error(error, data_dir, manifest):
  """One line naming the corrupt shard and byte offset behind a `DataLossError`."""
  first = getattr(error, "message", str(error)).strip().splitlines()[0]
  for path in manifest.shard_paths(data_dir):
    found = integrity.find_corrupt_record(path)
    if found is not None:
      offset, reason = found
      return ValueError(f"{path}: corrupt record at byte offset {offset} ({reason}); "
                        "transcode the shard again (rec2tfrecord), or check the disk")
  return ValueError(f"{data_dir}: the input reported corrupt data ({first}), but every "
                    "shard's records check out now; was a file replaced during training?")


def weights_fingerprint(*modules) -> str:
  """SHA-256 of the trainable weights' bytes: equal on workers that hold equal weights.

  BatchNorm moving statistics are left out: as in PyTorch DDP and MXNet, each
  replica averages its own batches, and the chief's are the ones saved.
  """
  digest = hashlib.sha256()
  for module in modules:
    for weight in module.trainable_weights:
      digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
  return digest.hexdigest()


def train(config, workdir=None, overrides=None, **shortcuts) -> TrainResult:
  """Trains (or resumes training) a face-recognition model.

  Args:
    config: an `ml_collections.ConfigDict`, or the path of a config file
      (`configs/NAME.py`, whose `get_config()` returns one).
    workdir: run directory; default `models/NETWORK-LOSS-DATASET`.
    overrides: `--config.*` values, applied after the shortcuts.
    **shortcuts: the seed's flags (`network`, `loss`, `dataset`, `lr`, ...),
      see `tfface.training.config.apply_shortcuts`.

  Returns:
    A `TrainResult`.

  Raises:
    ValueError: bad configuration or data (labels out of range, too few
      shard files, ...), with the file and place named.
    NonFiniteLossError: the loss became NaN/Inf; the last checkpoint is the
      last good state.
    OSError: missing data or verification files.
  """
  if isinstance(config, str):
    config = config_lib.load_config_file(config)
  config = config_lib.apply_shortcuts(config, overrides, **shortcuts)
  workdir = workdir or config_lib.default_workdir(config)
  # The strategy comes first: it must see TensorFlow's devices uninitialized.
  strategy = strategy_lib.create_strategy(config.strategy, config.cpu_replicas)
  if config.input.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  previous_policy = keras.mixed_precision.global_policy()
  if config.mixed_precision:
    keras.mixed_precision.set_global_policy(config.mixed_precision)
  try:
    return _setup_and_run(config, workdir, strategy)
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)


def _setup_and_run(config, workdir, strategy):
  chief = strategy_lib.is_chief(strategy)
  manifest = datasets.load_manifest(config)
  plan = _plan(config, manifest, strategy.num_replicas_in_sync)
  # Cheap checks of the data before anything slow (verification at start).
  integrity.check_shard_sizes(config.data_dir, manifest)
  pipeline.check_first_image(config.data_dir, manifest, plan.image_size)
  if tf.train.latest_checkpoint(os.path.join(workdir, checkpointing.CKPT_DIR)):
    _check_resume_config(workdir, config, plan)
  elif config.pretrained:  # a resumed run ignores --pretrained
    checkpointing.resolve_pretrained(config.pretrained)  # a bad path writes no workdir
  # The verification targets are read (and checked) before the workdir is
  # written to: a bad .bin leaves no half-started run behind.
  verifier, missing_targets = None, []
  if chief:
    bins = datasets.resolve_val_bins(config, manifest)
    missing_targets = datasets.missing_targets(config, bins)
    if bins:
      verifier = verifier_lib.Verifier(bins, plan.image_size, config.verify_batch_size,
                                       workdir)
    os.makedirs(workdir, exist_ok=True)
    _write_config(workdir, config, plan)
  prefix = "" if chief else f"[worker {strategy_lib.worker_index(strategy)}] "

  with strategy.scope():
    task = task_lib.build_task(config, plan.num_classes, plan.image_size,
                               plan.global_batch, plan.replicas, plan.total_steps,
                               plan.peak_lr, strategy)
  workers = strategy_lib.num_workers(strategy)
  saver = checkpointing.Checkpointer(
      workdir, task.backbone, task.head, task.optimizer, chief, config.keep_checkpoints,
      worker_index=strategy_lib.worker_index(strategy),
      barrier=strategy_lib.barrier(strategy) if workers > 1 else None,
      partial_fc=task.partial_fc)
  reporter = summaries.Reporter(workdir, chief, plan.total_steps, plan.global_batch, prefix,
                                metric_names=task.metric_names)
  try:
    return _run(config, workdir, strategy, manifest, plan, task, saver, reporter, verifier,
                missing_targets)
  finally:
    saver.close()
    reporter.close()


def _lr_note(config, plan):
  if config.lr is not None:
    return "--lr, absolute"
  if plan.global_batch == config.reference_batch:
    return f"base_lr at a global batch of {config.reference_batch}"
  return (f"base_lr {config.base_lr:g} per {config.reference_batch} images, scaled to "
          f"the global batch of {plan.global_batch}")


def _events(config, plan):
  """The margin warm-up's end, and the steps where the step function switches mode."""
  margin_from = round(config.head.margin_warmup * plan.total_steps)
  return margin_from, sorted({config.freeze_backbone_steps, margin_from, plan.total_steps})


def _next_stop(step, config, plan, switches):
  """The first step after `step` at which the host must act."""
  stops = [plan.total_steps, step + config.steps_per_loop]
  for every in (config.log_every, config.checkpoint_every, config.verify_every):
    stops.append((step // every + 1) * every)
  stops += [s for s in switches if s > step]
  return min(stops)


def _build_input(config, strategy, manifest, plan, saver, start):
  """This worker's input, continuing the saved position of checkpoint `start` if any."""
  workers = strategy_lib.num_workers(strategy)
  index = strategy_lib.worker_index(strategy)
  signature = {"data_dir": os.path.abspath(config.data_dir),
               "num_images": manifest.num_images, "global_batch": plan.global_batch,
               "workers": workers, "worker_index": index,
               "seed": config.seed, "deterministic": bool(config.input.deterministic),
               "loss": config.loss}
  # Older checkpoints, or another batch or worker count, have no usable
  # position: replay the stream (deterministic mode) or start a fresh order.
  why_not = saver.worker_state_mismatch(start, signature) if start else ""
  replay_from = start if why_not else 0
  stats = pipeline.DecodeStats()
  worker_input = pipeline.WorkerInput(
      strategy, config.data_dir, plan.global_batch,
      _input_options(config, reseed_at=replay_from), num_workers=workers,
      worker_index=index, start_step=replay_from, image_size=plan.image_size,
      num_classes=plan.num_classes, stats=stats, manifest=manifest)
  saver.track_worker_state(signature, iterator=worker_input.iterator)
  note = ""
  if why_not:
    note = f"input position not restored ({why_not}); " + (
        f"replaying {start} steps of input" if config.input.deterministic else
        "continuing with a fresh shuffle")
  elif start:
    saver.restore_worker_state(start)
    note = f"input position restored from checkpoint {start}"
  return worker_input, stats, note


def _resolve_jit(config):
  """Whether to compile the step with XLA, and why (for the log)."""
  if config.jit_compile is not None:
    return bool(config.jit_compile), "--config.jit_compile"
  accelerators = [d.device_type for d in tf.config.list_logical_devices()
                  if d.device_type in ("GPU", "TPU")]
  if accelerators:
    return True, f"default on {accelerators[0]}"
  return False, ("default on CPUs, where XLA measured slower; "
                 "--config.jit_compile=True to try it")


def _run(config, workdir, strategy, manifest, plan, task, saver, reporter, verifier,
         missing_targets):
  reporter.line(
      f"training {config.network} {config.loss} on {plan.num_images} images of "
      f"{plan.num_classes} identities ({config.data_dir}); global batch "
      f"{plan.global_batch} = {config.batch_size} x {plan.replicas} replica(s); "
      f"peak lr {plan.peak_lr:g} ({_lr_note(config, plan)}); {plan.total_steps} steps; "
      f"workdir {workdir}")
  if task.partial_fc is not None:
    pfc = task.partial_fc
    reporter.line(f"Partial FC: {plan.num_classes} class centres in {plan.replicas} "
                  f"shard(s), sample rate {pfc.sample_rate:g}; head memory per replica "
                  f"{pfc.head_memory_bytes() / 2**20:,.1f} MiB")
  resumed = saver.restore_latest()
  start = int(task.step.numpy())
  if resumed:
    reporter.line(f"resumed from {resumed} at step {start}")
    if saver.partial_fc_note:
      reporter.line(saver.partial_fc_note)
  elif config.pretrained:
    reporter.line(f"pretrained: {checkpointing.load_pretrained(config.pretrained, task.backbone)}")

  if missing_targets:
    reporter.line(f"verification targets not found, skipped: {', '.join(missing_targets)}")
  result = TrainResult(workdir, start, resumed, None)
  if start >= plan.total_steps:
    reporter.line(f"already at step {start} of {plan.total_steps}; nothing to train")
    return result

  worker_input, stats, input_note = _build_input(config, strategy, manifest, plan, saver,
                                                 start)
  if input_note:
    reporter.line(input_note)
  jit, why = _resolve_jit(config)
  reporter.line(f"XLA {'on' if jit else 'off'} ({why})")
  loop = loop_lib.TrainLoop(strategy, task, worker_input, jit,
                            warn=lambda text: reporter.line(f"warning: {text}"))
  margin_from, switches = _events(config, plan)
  weights_finite = tf.function(task.weights_finite)

  def verify(step, record_best=True):
    results, improved = verifier.run(task.backbone, step, record_best=record_best)
    for res, best in results:
      reporter.verification(step, res, best)
    verifier.save()
    if improved and record_best:
      saver.save_best()
    return results[-1][0].accuracy_flip_mean

  if verifier and start == 0 and config.verify_at_start:
    # The untrained model is measured, not kept: no best_backbone.keras yet.
    result.accuracy_before = verify(0, record_best=False)
    reporter.line(f"Accuracy-Flip before training: {result.accuracy_before:.4f}")

  step, verified, metrics = start, start, {}
  # Step-weighted sums of the loops' metrics since the last log line: the
  # line shows their means, whatever loops (checkpoints, verification, mode
  # switches, steps_per_loop) ended in between.
  sums, counted = {}, 0
  reporter.start(step)
  try:
    while step < plan.total_steps:
      stop = _next_stop(step, config, plan, switches)
      try:
        out = loop.run(stop - step, train_backbone=step >= config.freeze_backbone_steps,
                       use_margin=step >= margin_from)
      except tf.errors.InvalidArgumentError as e:
        label_error = _label_error(e, config.data_dir)
        if label_error is not None:
          raise label_error from None
        raise
      except tf.errors.DataLossError as e:
        raise _data_loss_error(e, config.data_dir, manifest) from None
      if out.nonfinite_step >= 0:
        raise NonFiniteLossError(
            f"loss is {out.nonfinite_loss} at step {out.nonfinite_step}; stopped without "
            f"saving. The last good checkpoint is {saver.latest or '(none yet)'}, left "
            f"intact. Lower the learning rate (--lr), add warmup "
            f"(--config.schedule.warmup_fraction) or set --config.clip_norm")
      step = int(task.step.numpy())
      if out.applied:
        for name, value in out.metrics.items():
          sums[name] = sums.get(name, 0.0) + value * out.applied
        counted += out.applied
      if step < stop:
        continue  # the loss-scale optimizer skipped overflowing updates: finish the span
      if step % config.log_every == 0 or step == plan.total_steps:
        if counted:
          metrics = {name: value / counted for name, value in sums.items()}
          sums, counted = {}, 0
        # The rate that produced this step's update: the schedule at step - 1.
        reporter.progress(step, metrics, float(task.learning_rate(step - 1)), stats.skipped)
      if step % config.checkpoint_every == 0 or step == plan.total_steps:
        # A finite loss was computed before this step's update; the weights
        # after it must be checked too before they overwrite a good checkpoint.
        if not bool(weights_finite()):
          raise NonFiniteLossError(
              f"the weights became NaN/Inf at step {step}; stopped without saving. "
              f"The last good checkpoint is {saver.latest or '(none yet)'}, left intact. "
              "Lower the learning rate (--lr) or set --config.clip_norm")
        saver.save(step)
      if verifier and (step % config.verify_every == 0 or step == plan.total_steps):
        result.accuracy_after = verify(step)
        verified = step
  except KeyboardInterrupt:
    # Ctrl-C: one line saying where the run stands, not a traceback.
    raise TrainingInterrupted(
        f"interrupted after step {int(task.step.numpy())}; the last checkpoint is "
        f"{saver.latest or '(none yet)'}: run the same command to resume from it") from None
  if verifier and verified != step:
    result.accuracy_after = verify(step)
  if result.accuracy_after is not None:
    reporter.line(f"Accuracy-Flip after training: {result.accuracy_after:.4f}")
  result.step, result.loss = step, metrics.get("loss")
  result.skipped_records = stats.skipped
  result.weights_sha256 = weights_fingerprint(*task.modules)
  reporter.line(f"finished at step {step}; skipped records {result.skipped_records}; "
                f"trainable weights sha256 {result.weights_sha256}")
  return result
