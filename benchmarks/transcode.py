"""Benchmark of rec2tfrecord against `cp` and the seed's per-record loop, same run.

  python benchmarks/transcode.py --work_dir=bench_run/transcode \
      [--sizes=20000,100000] [--profile]

Generates (once, cached in work_dir) a synthetic InsightFace dataset of the
largest size and takes prefixes of it for the smaller sizes, then measures,
on the same files and machine:

* `transcode()` (one worker process per CPU) at every size: images/s and
  CPU time per image (all processes);
* a plain `cp` of `train.rec` at every size (the page cache's bound:
  transcode copies bytes too), and `cp` followed by `fsync` (the disk's
  bound: every shard is synced before it is renamed);
* the seed's per-record loop in one process: read each record, decode and
  re-encode the JPEG (what a converter built on `cv2`/PIL does), on a prefix;
* the marginal rate between the two largest sizes, `(n2 - n1) / (t2 - t1)`,
  which cancels the fixed start-up cost (process start, imports, planning);
  the goals (>= 25x the per-record loop, >= 0.3x `cp`) are on these;
* the peak resident memory of a fresh transcode process at both sizes;
* with `--profile`, a cProfile of one worker's job (one group of shards,
  run in this process) and the share of its time per function.

The TFRecords of the largest dataset are left in WORK_DIR/tfrecords, for
`benchmarks/input_pipeline.py` (`make bench`).

Everything is printed as ratios against the baselines measured here.
"""
import cProfile
import functools
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

_WORK_DIR = flags.DEFINE_string("work_dir", "bench_run/transcode", "Scratch directory.")
_SIZES = flags.DEFINE_list("sizes", ["20000", "100000"],
                           "Dataset sizes (images); the marginal rate uses the two largest.")
_NAIVE_IMAGES = flags.DEFINE_integer("naive_images", 3000,
                                     "Records the per-record decode/re-encode loop processes.",
                                     lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions; the best is reported.",
                                lower_bound=1)
_PROFILE = flags.DEFINE_bool("profile", False, "cProfile one worker's job and print shares.")
_CONTENDERS = flags.DEFINE_list(
    "contenders", ["rec2tfrecord", "sha256", "library", "per_record"],
    "Transcode paths timed side by side (the first is the baseline of the "
    "comparisons): rec2tfrecord (as shipped), library (tf.train.Example + "
    "tf.io.TFRecordWriter instead of example_batch), per_record (RecordIOReader per "
    "record instead of rec_batch), preadv (the records read into a buffer instead of "
    "the .rec mapped), whole_shard (each step over a whole shard instead of a "
    "chunk at a time), python_framer (example_batch.fill's Python loop instead of its "
    "C extension), small_groups (groups of 256 MiB of records, as before), "
    "sha256 and blake2b (SHA-256 or BLAKE2b-256 digests instead of BLAKE3).")

_IMAGES_PER_IDENTITY = 40

# Run in a fresh interpreter to measure peak RSS (own + worker processes). Its
# own peak is VmHWM: ru_maxrss would carry the benchmark's over the exec. A
# worker's RSS also counts the pages of the mapped .rec it touched, which are
# the page cache's: after writing each shard, the workers note the largest
# RssAnon (their own memory) and RssFile they had, and send them to the parent.
_RSS_CHILD = """
import json, multiprocessing, resource, sys
from tfface.data.transcode import shard_writer
from tfface.data.transcode import transcode

def peak_kb():
  with open("/proc/self/status") as f:
    return int(next(line for line in f if line.startswith("VmHWM")).split()[1])

def rss_kb():
  with open("/proc/self/status") as f:
    fields = dict(line.split(":", 1) for line in f)
  return [int(fields[k].split()[0]) for k in ("RssAnon", "RssFile")]

seen = multiprocessing.get_context("fork").Array("q", 2)  # inherited by the workers
real_write = shard_writer.write_shard_file

def write(*args):
  written = real_write(*args)
  with seen.get_lock():
    seen[:] = [max(a, b) for a, b in zip(seen[:], rss_kb())]
  return written

shard_writer.write_shard_file = write
before = peak_kb()
result = transcode.transcode(sys.argv[1], sys.argv[2], resume=False)
print(json.dumps({"after_import_kb": before, "parent_kb": peak_kb(),
                  "workers_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "worker_anon_kb": seen[0], "worker_file_kb": seen[1],
                  "images": result.manifest.num_images}))
"""


def _dataset(work_dir, num_images):
  """The synthetic dataset of `num_images` images, generated once."""
  from tfface.data.insightface import rec as insightface_rec
  from tfface.data.synthetic import dataset as synthetic
  path = os.path.join(work_dir, f"rec_{num_images}")
  if os.path.exists(os.path.join(path, "property")):
    with insightface_rec.InsightFaceRec(path) as rec:
      if rec.num_images == num_images:
        return path
  identities = -(-num_images // _IMAGES_PER_IDENTITY)
  start = time.time()
  synthetic.generate(path, num_identities=identities,
                     images_per_identity=_IMAGES_PER_IDENTITY, num_pairs=20,
                     num_val_identities=2, val_images_per_identity=2, overwrite=True)
  print(f"generated {identities * _IMAGES_PER_IDENTITY} images in {time.time() - start:.0f} s")
  return path


def _prefix(src, dst, num_images):
  """The first `num_images` images of `src` as their own dataset (no re-rendering)."""
  from tfface.data.insightface import rec as insightface_rec
  from tfface.data.insightface import rec_writer
  if os.path.exists(os.path.join(dst, "train.idx")):
    with insightface_rec.InsightFaceRec(dst) as rec:
      if rec.num_images == num_images:
        return dst
  with insightface_rec.InsightFaceRec(src) as rec, rec_writer.InsightFaceWriter(dst) as out:
    for key in rec.image_keys[:num_images].tolist():
      out.add(*rec.read(key))
  return dst


def _warm(path):
  """Reads a file once so that every contender starts from a warm page cache."""
  with open(path, "rb") as f:
    while f.read(64 << 20):
      pass


def _cpu_seconds() -> float:
  """User + system CPU of this process and its finished children."""
  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
      resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn, clean=None):
  """(wall seconds, CPU seconds) of one run of `fn`; `clean()` runs untimed before it."""
  if clean:
    clean()  # every contender writes into a fresh place: deleting is not timed
  # No run waits behind the write-back of an earlier run's files (rec2tfrecord
  # syncs its shards; cp does not).
  os.sync()
  start, cpu = time.perf_counter(), _cpu_seconds()
  fn()
  return time.perf_counter() - start, _cpu_seconds() - cpu


def _cpu_times() -> dict | None:
  """The machine's CPU time by state since boot (`/proc/stat`; None elsewhere)."""
  try:
    with open("/proc/stat") as f:
      fields = [int(v) for v in f.readline().split()[1:9]]
  except (OSError, ValueError):
    return None
  return dict(zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"),
                  fields))


def _durable_copy(source, target):
  """`cp`, then `fsync` of the copy: the disk's bound for output that must be on disk
  when the call returns, as rec2tfrecord's shards are (each is synced before it
  gets its final name)."""
  subprocess.run(["cp", source, target], check=True)
  with open(target, "rb") as f:
    os.fsync(f.fileno())


def _naive_rate(rec_dir, count):
  """(seconds, CPU seconds) per image of read + cv2 decode + re-encode, one at a time."""
  import cv2
  from tfface.data.insightface import rec as insightface_rec
  with insightface_rec.InsightFaceRec(rec_dir) as rec:
    keys = rec.image_keys[:count].tolist()
    start, cpu = time.perf_counter(), _cpu_seconds()
    for key in keys:
      _, data = rec.read(key)
      image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
      cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return (time.perf_counter() - start) / len(keys), (_cpu_seconds() - cpu) / len(keys)


def _peak_rss(rec_dir, out_dir):
  proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, rec_dir, out_dir],
                        capture_output=True, text=True, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _library_write_shard_file(path, chosen, images, labels, keys, slow, algorithm):
  """`shard_writer.write_shard_file` through the libraries: one `tf.train.Example`
  per record, written by `tf.io.TFRecordWriter`, synced, then read for its digest."""
  import tensorflow as tf
  from tfface.data.tfrecord import framing
  source = memoryview(images.data)
  with tf.io.TFRecordWriter(path) as writer:
    for i, label, key in zip(chosen.tolist(), labels[chosen].tolist(), keys[chosen].tolist()):
      image = slow[i] if i in slow else bytes(
          source[images.at[i]:images.at[i] + images.length[i]])
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
          "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
          "image/source_key": tf.train.Feature(int64_list=tf.train.Int64List(value=[key])),
      })).SerializeToString(deterministic=True))
  with open(path, "rb") as f:
    os.fsync(f.fileno())
  # The file is read back once, for its digest (no buffer to compare with).
  found = framing.scan(path, algorithm)
  return found.num_bytes, found.digest


def _whole_shard_write_shard_file(path, chosen, images, labels, keys, slow, algorithm):
  """`shard_writer.write_shard_file` as it was in 0.3.0: each step over the whole
  shard (frame it, write it, start the disk, digest it, read it back in 1 MiB
  blocks, sync)."""
  from tfface.data.tfrecord import digest
  from tfface.data.tfrecord import example_batch
  from tfface.data.transcode import shard_writer
  staged = images.length[chosen]
  lengths = staged.copy()
  slow_rows = [(j, slow[i]) for j, i in enumerate(chosen.tolist()) if i in slow]
  for j, image in slow_rows:
    lengths[j] = len(image)
  framed = example_batch.layout(lengths, labels[chosen], keys[chosen], shard_writer._buffer(
      "framing", example_batch.size_bound(lengths)))  # pylint: disable=protected-access
  out = memoryview(framed.buffer)
  for j, image in slow_rows:
    out[framed.image_at[j]:framed.image_at[j] + len(image)] = image
  # 0.3.0's Python loop over the whole shard: copy every image in, then seal.
  example_batch.fill(framed, images.data, images.at[chosen], staged, native=False)
  hasher = digest.new(algorithm)
  with open(path, "wb") as f:
    f.write(out)
    f.flush()
    shard_writer._start_writeback(f.fileno(), 0, 0)  # pylint: disable=protected-access
    hasher.update(out)
    block = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as back:
      for start in range(0, len(out), len(block)):
        want = out[start:start + len(block)]
        if len(block) != len(want):
          block = bytearray(len(want))
        if back.readinto(block) != len(block) or block != want:
          raise OSError(f"{path}: read back differs at byte offset {start}")
    os.fsync(f.fileno())
  return len(out), hasher.hexdigest()


def _all_suspect(data, offsets, ends):
  """`rec_batch.map_images` vouching for no record: all go through RecordIOReader."""
  from tfface.data.transcode import rec_batch
  del ends  # unused
  n = len(offsets)
  return rec_batch.Images(np.zeros(n, bool), np.zeros(n, np.float32),
                          np.zeros((n, 8), np.uint8), data, np.zeros(n, np.int64),
                          np.zeros(n, np.int64))


_staging = np.zeros(0, np.uint8)  # the preadv contender's buffer, reused like the old one
_real_map_images = None  # rec_batch.map_images, kept while a contender patches it


def _preadv_images(path, offsets, ends):
  """`rec_batch.map_images` as it was before the `.rec` was mapped: the records
  read into one reused buffer by `preadv`, one call per run of adjacent records
  (at most 8 MiB), then located there."""
  global _staging
  sizes = np.asarray(ends, np.int64) - offsets
  starts = np.cumsum(sizes) - sizes  # where each record goes in the buffer
  total = int(sizes.sum())
  if len(_staging) < total:
    _staging = np.empty(total, np.uint8)
  new_run = np.r_[True, offsets[1:] != ends[:-1]]
  run_start = offsets[new_run][np.cumsum(new_run) - 1]
  block = (offsets - run_start) // (8 << 20)
  lo = np.flatnonzero(new_run | np.r_[True, block[1:] != block[:-1]])
  hi = np.r_[lo[1:], len(offsets)].astype(np.int64)
  view = memoryview(_staging)
  with open(path, "rb", buffering=0) as f:
    for first, last, at in zip(starts[lo].tolist(), (starts[hi - 1] + sizes[hi - 1]).tolist(),
                               offsets[lo].tolist()):
      if os.preadv(f.fileno(), [view[first:last]], at) != last - first:
        raise ValueError(f"{path}: short read")  # the benchmark's files are whole
  del view
  # The buffer holds the records back to back: locate them as if it were the file.
  return _real_map_images(_staging[:total], starts, starts + sizes)


def _patched(fn, patches):
  """`fn` with module attributes replaced while it runs; workers fork and inherit them."""
  def run(*args):
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, value in patches:
      setattr(module, name, value)
    try:
      return fn(*args)
    finally:
      for module, name, value in saved:
        setattr(module, name, value)
  return run


def _contenders():
  """`{name: fn(rec_dir, out_dir)}`: the transcode paths timed side by side."""
  from tfface.data.tfrecord import digest
  from tfface.data.tfrecord import example_batch
  from tfface.data.transcode import rec_batch
  from tfface.data.transcode import shard_writer
  from tfface.data.transcode import transcode
  global _real_map_images
  _real_map_images = rec_batch.map_images

  def shipped(rec, out, algorithm=digest.DEFAULT):
    return transcode.transcode(rec, out, resume=False, digest_algorithm=algorithm)

  everything = {
      "rec2tfrecord": shipped,
      "library": _patched(shipped, [(shard_writer, "write_shard_file",
                                     _library_write_shard_file)]),
      "per_record": _patched(shipped, [(rec_batch, "map_images", _all_suspect)]),
      "preadv": _patched(shipped, [(rec_batch, "map_file", lambda path: path),
                                   (rec_batch, "map_images", _preadv_images)]),
      "blake2b": lambda rec, out: shipped(rec, out, digest.BLAKE2B_256),
      "sha256": lambda rec, out: shipped(rec, out, digest.SHA256),
      "whole_shard": _patched(shipped, [(shard_writer, "write_shard_file",
                                         _whole_shard_write_shard_file)]),
      "small_groups": _patched(shipped, [(transcode, "GROUP_BYTES", 256 << 20)]),
      "python_framer": _patched(shipped, [(example_batch, "NATIVE", False)]),
  }
  unknown = set(_CONTENDERS.value) - set(everything)
  if unknown:
    raise app.UsageError(f"unknown --contenders {sorted(unknown)}; known: {sorted(everything)}")
  if "library" in _CONTENDERS.value:
    import tensorflow  # noqa: F401  (loaded before the workers fork, as a tool would)
  return {name: everything[name] for name in _CONTENDERS.value}


def _measure(datasets, work, contenders):
  """Best (wall, CPU) seconds of `cp`, every contender and the per-record loop.

  Every round times each of them once at every size, so that the load of
  other processes, which comes and goes, hits all of them alike, and each
  round starts the contenders one further along (a contender's place in the
  round changed its time by up to 25%); the best of the rounds is kept.

  Returns:
    `{(size, name): (wall, cpu)}`, and the per-record loop's seconds per
    image under `(None, "per_record_loop")`.
  """
  best = {}

  def keep(key, timing):
    best[key] = min(best.get(key, (float("inf"),) * 2), timing)

  copy = os.path.join(work, "copy.rec")
  names = list(contenders)
  for round_index in range(_REPEATS.value):
    turn = round_index % len(names)
    in_order = names[turn:] + names[:turn]
    for n, rec_dir in datasets.items():
      rec_path = os.path.join(rec_dir, "train.rec")
      _warm(rec_path)  # every contender starts from a warm page cache
      keep((n, "cp"), _timed(functools.partial(subprocess.run, ["cp", rec_path, copy],
                                               check=True)))
      os.remove(copy)
      keep((n, "cp_fsync"), _timed(functools.partial(_durable_copy, rec_path, copy)))
      os.remove(copy)
      for name in in_order:
        out = os.path.join(work, f"out_{name}")
        clean = functools.partial(shutil.rmtree, out, ignore_errors=True)
        keep((n, name), _timed(functools.partial(contenders[name], rec_dir, out), clean))
        clean()
    keep((None, "per_record_loop"), _naive_rate(datasets[max(datasets)], _NAIVE_IMAGES.value))
  return best


def _profile_worker(rec_dir, work):
  """cProfile of one worker's job (its group of shards) in this process; prints shares."""
  from tfface.data.transcode import shard_writer
  from tfface.data.transcode import transcode
  out = os.path.join(work, "out_profile")
  shutil.rmtree(out, ignore_errors=True)
  captured = []
  real_run = transcode._run_tasks  # pylint: disable=protected-access
  transcode._run_tasks = lambda groups, *args: captured.extend(groups) or []
  try:  # plan the shards as a run does, without writing them
    transcode.transcode(rec_dir, out, num_workers=1, resume=False)
  finally:
    transcode._run_tasks = real_run
  real = shard_writer.write_shards
  group = captured[0]
  real(group)  # a worker's first group allocates its buffers; the others reuse them
  for task in group:  # a run writes new files: replacing old ones costs more
    os.remove(os.path.join(out, task.name))
    os.remove(os.path.join(out, shard_writer.STATE_DIR, task.name + ".json"))
  os.sync()
  profiler = cProfile.Profile()
  profiler.enable()
  real(group)
  profiler.disable()
  stats = pstats.Stats(profiler)
  total = stats.total_tt
  images = sum(len(t.keys) for t in group)
  print(f"profile of one worker's group, buffers warm ({len(group)} shards, {images} images, "
        f"{total:.2f} s, {1e6 * total / images:.1f} us/image); share of time per function:")
  rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:12]
  for (filename, line, name), (_, _, own, _, _) in rows:
    where = f"{os.path.basename(filename)}:{line}" if line else filename
    print(f"  {100 * own / total:5.1f}%  {own:6.3f} s  {name} ({where})")
  shutil.rmtree(out, ignore_errors=True)


def main(argv):
  del argv  # unused
  from tfface.data.transcode import transcode
  work = _WORK_DIR.value
  os.makedirs(work, exist_ok=True)
  sizes = sorted(int(s) for s in _SIZES.value)
  largest = _dataset(work, sizes[-1])
  datasets = {n: largest if n == sizes[-1] else
              _prefix(largest, os.path.join(work, f"prefix_{n}"), n) for n in sizes}
  contenders = _contenders()
  load_before, times_before = os.getloadavg()[0], _cpu_times()
  results = _measure(datasets, work, contenders)
  times_after = _cpu_times()
  naive_wall, naive_cpu = results[(None, "per_record_loop")]
  naive = 1 / naive_wall
  from tfface.data.tfrecord import example_batch
  print("rec2tfrecord frames shards with "
        + ("the C extension (tfface/data/tfrecord/_framer.c)" if example_batch.NATIVE else
           "the Python loop (the C extension is not built, or the CPU lacks CRC-32C)"))
  print(f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (other processes share the CPUs); best of "
        f"{_REPEATS.value} rounds, each timing every contender once")
  if times_before and times_after:
    spent = {k: times_after[k] - times_before[k] for k in times_after}
    total = sum(spent.values()) or 1
    print(f"CPU time while measuring: {100 * spent['steal'] / total:.0f}% taken by the host "
          f"(steal; a VM's figures swing with it), {100 * spent['idle'] / total:.0f}% idle, "
          f"{100 * spent['iowait'] / total:.0f}% waiting for the disk")
  print(f"seed's per-record loop (read + decode + re-encode, 1 process): {naive:,.0f} "
        f"images/s, CPU {1e6 * naive_cpu:.0f} us/image ({_NAIVE_IMAGES.value} records)")
  for n in sizes:
    mb = os.path.getsize(os.path.join(datasets[n], "train.rec")) / 1e6
    t_cp = results[(n, "cp")][0]
    t_sync = results[(n, "cp_fsync")][0]
    print(f"{n} images ({mb:.1f} MB .rec): cp {t_cp:.3f} s ({mb / t_cp:,.0f} MB/s), "
          f"cp + fsync {t_sync:.3f} s ({mb / t_sync:,.0f} MB/s)")
    for name in contenders:
      wall, cpu = results[(n, name)]
      print(f"  {name}: {wall:.3f} s, {n / wall:,.0f} images/s, CPU {1e6 * cpu / n:.1f} "
            f"us/image; {t_cp / wall:.2f}x the speed of cp, {t_sync / wall:.2f}x cp + fsync, "
            f"{n / wall / naive:.1f}x the per-record loop")
  if len(sizes) >= 2:
    small, large = sizes[-2], sizes[-1]
    extra = large - small
    t_cp = results[(large, "cp")][0] - results[(small, "cp")][0]
    t_sync = results[(large, "cp_fsync")][0] - results[(small, "cp_fsync")][0]
    print(f"marginal rate, {small} -> {large} images (fixed costs cancel): cp "
          f"{extra / t_cp:,.0f} images/s, cp + fsync {extra / t_sync:,.0f} images/s "
          f"({extra / t_sync / naive:.1f}x the per-record loop)")
    for name in contenders:
      wall = results[(large, name)][0] - results[(small, name)][0]
      cpu = results[(large, name)][1] - results[(small, name)][1]
      print(f"  {name}: {extra / wall:,.0f} images/s, CPU {1e6 * cpu / extra:.1f} us/image; "
            f"{t_cp / wall:.2f}x the speed of cp (goal >= 0.3x), "
            f"{t_sync / wall:.2f}x cp + fsync, "
            f"{extra / wall / naive:.1f}x the per-record loop (goal >= 25x), "
            f"{naive_cpu * extra / cpu:.1f}x per CPU second")
    base = next(iter(contenders))
    base_wall = results[(large, base)][0] - results[(small, base)][0]
    for name in list(contenders)[1:]:
      wall = results[(large, name)][0] - results[(small, name)][0]
      print(f"  {base} vs {name}: {wall / base_wall:.2f}x faster (marginal), "
            f"{results[(large, name)][0] / results[(large, base)][0]:.2f}x at {large}, "
            f"{results[(small, name)][0] / results[(small, base)][0]:.2f}x at {small}")
    rss = {n: _peak_rss(datasets[n], os.path.join(work, f"rss_{n}")) for n in (small, large)}
    for n, r in rss.items():
      print(f"peak RSS, {n} images: parent {r['parent_kb'] / 1024:.0f} MiB (of which "
            f"{r['after_import_kb'] / 1024:.0f} MiB after imports), largest worker "
            f"{r['workers_kb'] / 1024:.0f} MiB, of which at most "
            f"{r['worker_anon_kb'] / 1024:.0f} MiB its own (RssAnon) and "
            f"{r['worker_file_kb'] / 1024:.0f} MiB mapped files (the .rec's page cache)")
      shutil.rmtree(os.path.join(work, f"rss_{n}"), ignore_errors=True)
    growth = (rss[large]["worker_anon_kb"] - rss[small]["worker_anon_kb"]) / max(
        rss[small]["worker_anon_kb"], 1)
    print(f"worker memory (RssAnon) growth from {small} to {large} images: "
          f"{100 * growth:+.1f}% (a worker holds one shard's buffer and the per-record "
          f"arrays of a group of at most {transcode.GROUP_BYTES >> 20} MiB of records)")
  if _PROFILE.value:
    _profile_worker(largest, work)
  transcode.transcode(largest, os.path.join(work, "tfrecords"), resume=False)


if __name__ == "__main__":
  app.run(main)
