"""Benchmark of rec2tfrecord against `cp` and a naive per-record loop, same run.

  python benchmarks/transcode.py --work_dir=bench_run/transcode [--num_images=20000]

Generates (once, cached in work_dir) a synthetic InsightFace dataset of
`num_images` images, then measures, on the same files and machine:

* `transcode()` (one worker process per CPU): images/s, MB/s of TFRecords
  written and CPU time per image (all processes);
* a plain `cp` of `train.rec` (the I/O bound: transcode copies bytes too);
* a naive loop in one process that reads each record, decodes and
  re-encodes the JPEG (what a converter built on `cv2`/PIL does), measured
  on a prefix; ratios are given overall, per process and per CPU second
  (the fairest under load from other processes);
* the peak resident memory of a fresh transcode process at half and full size.

Goals from the issue: >= 30x the naive loop, >= 0.25x the speed of `cp`,
memory flat as the dataset grows. Everything is printed as ratios against
the baselines measured here.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

_WORK_DIR = flags.DEFINE_string("work_dir", "bench_run/transcode", "Scratch directory.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 20000, "Images in the generated dataset.")
_NAIVE_IMAGES = flags.DEFINE_integer("naive_images", 3000,
                                     "Records the naive decode/re-encode loop processes.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions; the best is reported.")

_IMAGES_PER_IDENTITY = 40

# Run in a fresh interpreter to measure peak RSS (own + worker processes).
_RSS_CHILD = """
import json, resource, sys
from tfface.data.transcode import transcode
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = transcode.transcode(sys.argv[1], sys.argv[2], resume=False)
print(json.dumps({"after_import_kb": before,
                  "parent_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
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
                     num_val_identities=2, val_images_per_identity=2)
  print(f"generated {identities * _IMAGES_PER_IDENTITY} images in {time.time() - start:.0f} s")
  return path


def _prefix(src, dst, num_images):
  """The first `num_images` images of `src` as their own dataset (no re-rendering)."""
  from tfface.data.insightface import rec as insightface_rec
  from tfface.data.insightface import rec_writer
  with insightface_rec.InsightFaceRec(src) as rec, rec_writer.InsightFaceWriter(dst) as out:
    for key in rec.image_keys[:num_images].tolist():
      out.add(*rec.read(key))
  return dst


def _cpu_seconds() -> float:
  """User + system CPU of this process and its finished children."""
  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
      resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _best(fn, repeats, clean=None):
  """Best (wall seconds, CPU seconds) of `repeats` runs; `clean()` runs untimed before each."""
  best = (float("inf"), float("inf"))
  for _ in range(repeats):
    if clean:
      clean()  # both contenders write into a fresh place: deleting is not timed
    start, cpu = time.perf_counter(), _cpu_seconds()
    fn()
    best = min(best, (time.perf_counter() - start, _cpu_seconds() - cpu))
  return best


def _naive_rate(rec_dir, count):
  """(images/s, CPU s/image) of read + cv2 decode + re-encode, one record at a time."""
  import cv2
  import numpy as np
  from tfface.data.insightface import rec as insightface_rec
  with insightface_rec.InsightFaceRec(rec_dir) as rec:
    keys = rec.image_keys[:count].tolist()
    start, cpu = time.perf_counter(), _cpu_seconds()
    for key in keys:
      _, data = rec.read(key)
      image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
      cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return len(keys) / (time.perf_counter() - start), (_cpu_seconds() - cpu) / len(keys)


def _peak_rss(rec_dir, out_dir):
  proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, rec_dir, out_dir],
                        capture_output=True, text=True, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv  # unused
  from tfface.data.transcode import transcode
  work = _WORK_DIR.value
  os.makedirs(work, exist_ok=True)
  full = _dataset(work, _NUM_IMAGES.value)
  rec_path = os.path.join(full, "train.rec")
  rec_mb = os.path.getsize(rec_path) / 1e6
  with open(rec_path, "rb") as f:  # both contenders start from a warm page cache
    while f.read(64 << 20):
      pass
  out = os.path.join(work, "tfrecords")
  result_box = []

  def run_transcode():
    result_box.append(transcode.transcode(full, out, resume=False))

  load_before = os.getloadavg()[0]
  t_transcode, cpu_transcode = _best(run_transcode, _REPEATS.value,
                                     lambda: shutil.rmtree(out, ignore_errors=True))
  result = result_box[-1]
  copy = os.path.join(work, "copy.rec")
  t_cp, _ = _best(lambda: subprocess.run(["cp", rec_path, copy], check=True), _REPEATS.value,
                  lambda: os.path.exists(copy) and os.remove(copy))
  os.remove(copy)
  naive, naive_cpu = _naive_rate(full, _NAIVE_IMAGES.value)
  images = result.manifest.num_images
  rate = images / t_transcode
  workers = min(os.cpu_count() or 1, len(result.manifest.shards))
  written_mb = sum(os.path.getsize(p) for p in result.manifest.shard_paths(out)) / 1e6
  from tfface.data.tfrecord import crc32c
  print(f"dataset: {images} images, train.rec {rec_mb:.1f} MB, {os.cpu_count()} CPUs, "
        f"CRC-32C backend {crc32c.BACKEND}, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (other processes share the CPUs)")
  print(f"rec2tfrecord ({workers} worker processes): {t_transcode:.2f} s, {rate:,.0f} images/s "
        f"({rate / workers:,.0f} per worker), {written_mb / t_transcode:,.1f} MB/s written "
        f"({rec_mb / t_transcode:,.1f} MB/s of .rec); CPU {1e6 * cpu_transcode / images:.1f} "
        f"us/image")
  print(f"cp train.rec: {t_cp:.2f} s ({rec_mb / t_cp:,.1f} MB/s); rec2tfrecord runs at "
        f"{t_cp / t_transcode:.2f}x the speed of cp (goal >= 0.25x)")
  print(f"naive read+decode+re-encode (1 process): {naive:,.0f} images/s, CPU "
        f"{1e6 * naive_cpu:.0f} us/image ({_NAIVE_IMAGES.value} records); rec2tfrecord is "
        f"{rate / naive:.1f}x faster (goal >= 30x), {rate / workers / naive:.1f}x per process, "
        f"{naive_cpu * images / cpu_transcode:.1f}x per CPU second")
  half = _prefix(full, os.path.join(work, "rec_half"), images // 2)
  small, large = (_peak_rss(half, os.path.join(work, "rss_half")),
                  _peak_rss(full, os.path.join(work, "rss_full")))
  for name, r in (("half", small), ("full", large)):
    print(f"peak RSS, {name} ({r['images']} images): parent {r['parent_kb'] / 1024:.0f} MiB "
          f"(of which {r['after_import_kb'] / 1024:.0f} MiB after imports), largest worker "
          f"{r['workers_kb'] / 1024:.0f} MiB")
  growth = (large["workers_kb"] - small["workers_kb"]) / max(small["workers_kb"], 1)
  print(f"worker memory growth from half to full size: {100 * growth:+.1f}%")
  shutil.rmtree(os.path.join(work, "rss_half"), ignore_errors=True)
  shutil.rmtree(os.path.join(work, "rss_full"), ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
