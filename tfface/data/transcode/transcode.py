"""InsightFace `.rec` -> globally shuffled, sharded TFRecords (`rec2tfrecord`).

InsightFace recs are sorted by identity, and a tf.data shuffle buffer cannot
undo that, so records are spread over the shards by a seeded permutation.
Each worker process owns whole shards: it opens the `.rec` itself, reads its
records in file order (sequential I/O), writes them in permutation order as
`tf.train.Example`s (image bytes copied, never re-encoded) to a temporary
name and renames the shard when complete, after saving a small sidecar with
its record count, size and digest in `OUT/.rec2tfrecord/`.

A rerun resumes: complete shards (final name + sidecar) are kept, the rest
are rewritten; the plan (seed, shard count, digest, source sizes) must match. With
`num_workers_total > 1` several machines share one output directory, each
writing the shards `i` with `i % num_workers_total == worker_index`; the run
that finds every shard present verifies them and writes `manifest.json`.
"""
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import re
import time

import numpy as np

from tfface import atomic
from tfface import progress as progress_lib
from tfface.data.insightface import rec as insightface_rec
from tfface.data.tfrecord import digest
from tfface.data.tfrecord import framing
from tfface.data.tfrecord import schema
from tfface.data.transcode import shard_writer

transcode_log = logging.getLogger(__name__)

STATE_DIR = shard_writer.STATE_DIR
TARGET_SHARD_BYTES = 128 << 20
# Source bytes a worker handles at once for a group of shards: a group's
# records are located in file order (one sequential pass over a cold `.rec`),
# and its per-record arrays (about 100 bytes a record) stay small however
# large the dataset. Large groups are dense in the file: one page fault of
# the mapped `.rec` then serves more records. A worker's own memory is about
# one shard; the `.rec` pages it maps are the page cache's.
GROUP_BYTES = 1 << 30
MIN_SHARDS = 16
# Shard files and their temporaries: train-00003-of-00016.tfrecord[.tmp-PID]
_SHARD_FILE = re.compile(r"^[a-z]+-\d{5}-of-\d{5}\.tfrecord(\.tmp-\d+)?$")


def default_num_shards(rec_bytes: int, num_images: int) -> int:
  """About 128 MB per shard, at least 16, never more shards than images."""
  shards = max(MIN_SHARDS, -(-rec_bytes // TARGET_SHARD_BYTES))
  return max(1, min(shards, num_images))


def shard_assignment(num_images: int, num_shards: int, seed: int) -> list[np.ndarray]:
  """Positions (into the image list) of each shard's records, in write order."""
  order = np.random.default_rng(seed).permutation(num_images)
  bounds = [i * num_images // num_shards for i in range(num_shards + 1)]
  return [order[bounds[i]:bounds[i + 1]] for i in range(num_shards)]


def _record_ends(rec: insightface_rec.InsightFaceRec, offsets: np.ndarray,
                 rec_bytes: int) -> np.ndarray:
  """Where each record at `offsets` ends at the latest: the next record's offset."""
  starts = np.sort(rec.index.offsets)
  return np.append(starts, rec_bytes)[np.searchsorted(starts, offsets, side="right")]


def _blame_idx(rec: insightface_rec.InsightFaceRec, error: ValueError) -> ValueError:
  """`error`, led by the `.idx` line at fault when its byte offset starts no record.

  The workers read records at `.idx` offsets and report a broken record by
  its byte offset ("bad magic ... at byte offset N"); only here, on the
  error path, is it checked whether a record starts there at all.
  """
  found = re.search(r"byte offset (\d+)", str(error))
  if not found or not str(error).startswith(rec.rec_path):
    return error
  explanation = rec.index.explain_offset(int(found.group(1)))
  return ValueError(f"{explanation}; reading there: {error}") if explanation else error


def _plan(rec: insightface_rec.InsightFaceRec, num_shards: int, seed: int,
          digest_algorithm: str) -> dict:
  return {
      "format_version": schema.MANIFEST_FORMAT_VERSION,
      "digest_algorithm": digest_algorithm,
      "rec_size": os.path.getsize(rec.rec_path),
      "idx_size": os.path.getsize(rec.idx_path) if rec.idx_path else None,
      "num_images": rec.num_images,
      "num_shards": num_shards,
      "seed": seed,
  }


def _prepare_output(output_dir: str, plan: dict, resume: bool):
  """Creates the state directory; checks (or resets) an earlier run's plan."""
  state = os.path.join(output_dir, STATE_DIR)
  os.makedirs(state, exist_ok=True)
  plan_path = os.path.join(state, "plan.json")
  if os.path.exists(plan_path) and resume:
    with open(plan_path) as f:
      old = json.load(f)
    if old != plan:
      diff = {k: (old.get(k), v) for k, v in plan.items() if old.get(k) != v}
      raise ValueError(f"{output_dir}: holds shards of a different transcode "
                       f"(differences, old vs new: {diff}); use an empty output "
                       "directory or --noresume to start over")
  elif not resume:
    _remove_outputs(output_dir)
  atomic.write_json(plan_path, plan)


def _remove_outputs(output_dir: str):
  """Deletes shards, temporaries, sidecars and the manifest of an earlier run."""
  for name in os.listdir(output_dir):
    if _SHARD_FILE.match(name) or name.startswith(schema.MANIFEST_NAME):
      os.remove(os.path.join(output_dir, name))
  state = os.path.join(output_dir, STATE_DIR)
  for name in os.listdir(state):
    os.remove(os.path.join(state, name))


def _remove_temporaries(output_dir: str, shards: list[int], count: int):
  """Drops temporaries left by killed workers of this machine's shards."""
  prefixes = tuple(schema.shard_name(i, count) + ".tmp-" for i in shards)
  for name in os.listdir(output_dir):
    if name.startswith(prefixes):
      os.remove(os.path.join(output_dir, name))


def _sidecar_path(output_dir: str, name: str) -> str:
  return os.path.join(output_dir, STATE_DIR, name + ".json")


def load_sidecar(output_dir: str, index: int, count: int) -> dict | None:
  """The saved result of a complete shard, or None if it must be (re)written."""
  name = schema.shard_name(index, count)
  sidecar = _sidecar_path(output_dir, name)
  if not (os.path.exists(os.path.join(output_dir, name)) and os.path.exists(sidecar)):
    return None
  with open(sidecar) as f:
    return json.load(f)


def _context():
  # Workers never touch TensorFlow, so fork is safe and avoids re-importing
  # the parent's modules (seconds per worker once TensorFlow is loaded).
  methods = multiprocessing.get_all_start_methods()
  return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _groups(tasks: list, num_workers: int) -> list[list]:
  """Splits shard tasks into groups of about `GROUP_BYTES` of source records.

  The group count is a multiple of the worker count (balanced load) when
  there are enough shards; shards are dealt round-robin.
  """
  source_bytes = sum(int(np.sum(t.ends - t.offsets)) for t in tasks)
  count = max(num_workers, -(-source_bytes // GROUP_BYTES))
  count = min(len(tasks), -(-count // num_workers) * num_workers)
  return [tasks[i::count] for i in range(count) if tasks[i::count]]


def _run_tasks(tasks, num_workers, bar, rec_path: str, rec_size: int) -> list[dict]:
  """Writes shard groups in worker processes; returns their results.

  Even one worker is a child process: the workers map the `.rec`, and a
  file that shrinks under a mapping kills its reader with SIGBUS, which
  here becomes an error naming the file rather than the end of the caller.
  """
  results = []
  ctx = _context()
  counter = ctx.Value("q", 0)
  with concurrent.futures.ProcessPoolExecutor(
      num_workers, mp_context=ctx, initializer=shard_writer.init_worker,
      initargs=(counter,)) as pool:
    pending = {pool.submit(shard_writer.write_shards, group) for group in tasks}
    try:
      while pending:
        finished, pending = concurrent.futures.wait(
            pending, timeout=0.5, return_when=concurrent.futures.FIRST_EXCEPTION)
        for future in finished:
          results += future.result()  # re-raises a worker's error
        bar.update(counter.value - bar.n)
    except concurrent.futures.process.BrokenProcessPool as e:
      size = os.path.getsize(rec_path) if os.path.exists(rec_path) else None
      if size != rec_size:
        raise ValueError(f"{rec_path}: changed during the transcode ({rec_size} bytes at the "
                         f"start, {'gone' if size is None else f'{size} bytes'} now), which "
                         "killed a worker reading it; rerun once the file is complete") from e
      raise RuntimeError("a transcode worker process died abruptly (killed by a signal, "
                         "e.g. the out-of-memory killer); rerun to resume") from e
    except BaseException:
      for future in pending:
        future.cancel()
      raise
  return results


@dataclasses.dataclass
class TranscodeResult:
  """What a `transcode` call did; `manifest` is None until every shard exists."""

  output_dir: str
  manifest: schema.Manifest | None
  shards_written: list[int]
  shards_kept: list[int]
  images_written: int
  bytes_written: int
  seconds: float

  @property
  def images_per_second(self) -> float:
    return self.images_written / max(self.seconds, 1e-9)

  @property
  def megabytes_per_second(self) -> float:
    return self.bytes_written / 1e6 / max(self.seconds, 1e-9)

  def summary(self) -> str:
    state = (f"{self.manifest.num_images} images of {self.manifest.num_classes} classes in "
             f"{len(self.manifest.shards)} shards, verified" if self.manifest else
             "not all shards exist yet (other workers); rerun to finalize the manifest")
    return (f"{self.output_dir}: {state}; wrote {len(self.shards_written)} shards "
            f"(kept {len(self.shards_kept)}): {self.images_written} images in "
            f"{self.seconds:.2f} s, {self.images_per_second:,.0f} images/s, "
            f"{self.megabytes_per_second:,.1f} MB/s")


def transcode(rec_dir, output_dir: str, num_shards: int | None = None,
              num_workers: int | None = None, seed: int = 0, worker_index: int = 0,
              num_workers_total: int = 1, resume: bool = True,
              digest_algorithm: str = digest.DEFAULT,
              progress: bool = False) -> TranscodeResult:
  """Converts an InsightFace `.rec` dataset into shuffled, sharded TFRecords.

  Args:
    rec_dir: directory with `train.rec`, `train.idx` (and `property`), or a
      `(rec_path, idx_path)` pair.
    output_dir: where shards, `manifest.json` and the `.rec2tfrecord/` state go.
    num_shards: shard count; default about 128 MB per shard, at least 16.
    num_workers: worker processes on this machine (default: CPU count).
    seed: seed of the global permutation; same seed, same shards.
    worker_index: which share of the shards this machine writes.
    num_workers_total: how many machines share the shards.
    resume: keep complete shards of an earlier run with the same plan;
      False deletes earlier outputs first.
    digest_algorithm: the shard digest `manifest.json` records (one of
      `digest.ALGORITHMS`).
    progress: show images written, rate and ETA on stderr (`tfface.progress`).

  Returns:
    A `TranscodeResult`; its manifest is written and verified once all
    shards exist.

  Raises:
    ValueError: bad input (named by file and key/byte offset) or a plan that
      differs from the one the output directory was started with.
  """
  if not 0 <= worker_index < num_workers_total:
    raise ValueError(f"worker_index must be in [0, {num_workers_total}); got {worker_index}")
  digest.new(digest_algorithm)  # an unknown algorithm fails before any work
  start = time.time()
  with insightface_rec.InsightFaceRec(rec_dir) as rec:
    if rec.num_images == 0:
      raise ValueError(f"{rec.rec_path}: holds no image records")
    rec_bytes = os.path.getsize(rec.rec_path)
    if num_shards is None:
      num_shards = default_num_shards(rec_bytes, rec.num_images)
    elif not 1 <= num_shards <= rec.num_images:
      raise ValueError(f"num_shards must be in [1, {rec.num_images}] (the number of "
                       f"images); got {num_shards}")
    os.makedirs(output_dir, exist_ok=True)
    plan = _plan(rec, num_shards, seed, digest_algorithm)
    _prepare_output(output_dir, plan, resume)
    mine = [i for i in range(num_shards) if i % num_workers_total == worker_index]
    _remove_temporaries(output_dir, mine, num_shards)
    kept = [i for i in mine if load_sidecar(output_dir, i, num_shards) is not None]
    todo = [i for i in mine if i not in kept]
    offsets = rec.image_offsets()
    assignment = shard_assignment(rec.num_images, num_shards, seed)
    num_classes = rec.declared_num_classes
    source_note = (f"num_classes from {rec.property_path}" if rec.property else
                   f"num_classes from the identity records of {rec.rec_path}")
    ends = _record_ends(rec, offsets, rec_bytes)
    tasks = [shard_writer.ShardTask(
        rec.rec_path, output_dir, i, num_shards, rec.image_keys[assignment[i]],
        offsets[assignment[i]], num_classes, source_note, ends[assignment[i]],
        digest_algorithm) for i in todo]
    workers = min(num_workers or os.cpu_count() or 1, max(1, len(tasks)))
    with progress_lib.progress(total=sum(len(t.keys) for t in tasks), desc="rec2tfrecord",
                               unit="records", disable=not progress) as bar:
      try:
        results = _run_tasks(_groups(tasks, workers), workers, bar, rec.rec_path, rec_bytes)
      except ValueError as e:
        raise _blame_idx(rec, e) from e
    manifest = None
    if all(load_sidecar(output_dir, i, num_shards) for i in range(num_shards)):
      manifest = finalize(output_dir, rec, plan, verified=todo)
  return TranscodeResult(output_dir, manifest, todo, kept,
                         sum(r["num_records"] for r in results),
                         sum(r["num_bytes"] for r in results), time.time() - start)


def finalize(output_dir: str, rec: insightface_rec.InsightFaceRec, plan: dict,
             verified=()) -> schema.Manifest:
  """Verifies every shard against its sidecar, then writes and re-reads the manifest.

  Args:
    output_dir: the TFRecord directory.
    rec: the source dataset.
    plan: the transcode plan (`_plan`).
    verified: shards that their writers read back in this run; the others
      (kept from an earlier run or written by other machines) are read here.

  Raises:
    ValueError: a shard whose record count, size or digest on disk differs
      from what its writer recorded, or labels outside the class range.
  """
  count, algorithm = plan["num_shards"], plan["digest_algorithm"]
  verified = set(verified)
  shards, max_label = [], -1
  for i in range(count):
    side = load_sidecar(output_dir, i, count)
    recorded = schema.ShardInfo(side["file"], side["num_records"], side["digest"],
                                side["num_bytes"])
    path = os.path.join(output_dir, side["file"])
    if i not in verified:
      found = framing.scan(path, algorithm)
      on_disk = schema.ShardInfo(side["file"], found.num_records, found.digest,
                                 found.num_bytes)
      if on_disk != recorded:
        raise ValueError(f"{path}: on disk it has {found.num_records} records, "
                         f"{found.num_bytes} bytes, {algorithm} {found.digest}; its writer "
                         f"recorded {recorded.num_records} records, {recorded.num_bytes} "
                         f"bytes, {algorithm} {recorded.digest}; rerun with --noresume")
    shards.append(recorded)
    if side["max_label"] is not None:
      max_label = max(max_label, side["max_label"])
  notes = list(rec.notes)
  if max_label > insightface_rec.FLOAT32_EXACT_LIMIT:
    notes.append(f"{rec.rec_path}: labels up to {max_label} exceed 2**24; float32 labels "
                 "in RecordIO may be off by one above that")
    transcode_log.warning(notes[-1])
  num_classes = rec.declared_num_classes
  if num_classes is None:
    num_classes = max_label + 1  # image labels are the truth (e.g. Glint360K)
  elif max_label >= num_classes:
    raise ValueError(f"{rec.rec_path}: an image has label {max_label}, outside "
                     f"[0, {num_classes}) from the identity records")
  image_size = [rec.property.height, rec.property.width] if rec.property else None
  source = {"rec_dir": os.path.abspath(os.path.dirname(rec.rec_path)),
            "rec_size": plan["rec_size"], "idx_size": plan["idx_size"],
            "layout": "header" if rec.has_header else "header-less",
            "notes": notes}
  manifest = schema.Manifest(
      num_images=sum(s.num_records for s in shards), num_classes=num_classes,
      image_size=image_size, seed=plan["seed"], shards=shards, source=source,
      digest_algorithm=algorithm)
  schema.save_manifest(output_dir, manifest)
  if schema.load_manifest(output_dir) != manifest:
    raise ValueError(f"{output_dir}: {schema.MANIFEST_NAME} does not read back as written")
  return manifest
