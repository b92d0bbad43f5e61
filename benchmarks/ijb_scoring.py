"""Benchmark of IJB-C-sized template pair scoring against InsightFace's loop, same run.

  python benchmarks/ijb_scoring.py [--order=file|shuffled] [--repeats=3]

Random unit template features (23,124 x 512, float32) and 15,658,489 pairs
with IJB-C's structure: every pair is an enrolment template (3,531) against
a verification template (19,593), drawn uniformly from those 69.2M
combinations (23% of them, as in IJB-C). `--order=file` sorts the pairs by
enrolment template, as a pair file grouped by its first column is;
`shuffled` is the worst case for locality.

Measures `tfface.evaluation.ijb.templates.score_pairs` (best of `repeats`)
and, on a 1,000,000-pair prefix, InsightFace's `verification()`: float64
template features, 100,000 pairs per chunk, `np.sum(feat1 * feat2, -1)`.
Also the peak memory numpy allocates inside `score_pairs` (tracemalloc) at
the full and at a quarter of the pair count. Prints one line; the goal of
the issue is >= 10M pairs/s on the 2-core CI machine.

With `--embed_model=MODEL --embed_ijb_dir=DIR`, a second line compares the
embedding of `--embed_images` loose crops by `faces.embed_images` (decode,
align, embed with flip) with `tools/verify.py`'s embedding of the same
faces already aligned in memory (`inference.embedding.raw_and_flipped`), same
model and batch size: the goal is equal throughput.
"""
import dataclasses
import time
import tracemalloc

from absl import app
from absl import flags
import numpy as np

from tfface.evaluation.ijb import templates

_ORDER = flags.DEFINE_enum("order", "file", ["file", "shuffled"], "Order of the pairs.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions; the best is reported.")
_BASELINE_PAIRS = flags.DEFINE_integer("baseline_pairs", 1_000_000,
                                       "Pairs the InsightFace loop scores.")
_EMBED_MODEL = flags.DEFINE_string("embed_model", None, "Model for the embedding line.")
_EMBED_IJB_DIR = flags.DEFINE_string("embed_ijb_dir", None, "IJB set for the embedding line.")
_EMBED_IMAGES = flags.DEFINE_integer("embed_images", 2048, "Loose crops embedded.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per forward pass (embedding).")

NUM_ENROL, NUM_VERIFY, NUM_PAIRS, DIM = 3_531, 19_593, 15_658_489, 512


def _insightface_scores(features, template_ids, p1, p2, batch_size=100_000):
  """eval_ijbc.py's `verification()`: chunks of gathered float64 rows."""
  template2id = np.zeros((max(template_ids) + 1, 1), dtype=int)
  template2id[template_ids, 0] = np.arange(len(template_ids))
  score = np.zeros((len(p1),))
  for s in range(0, len(p1), batch_size):
    feat1 = features[template2id[p1[s:s + batch_size]]]
    feat2 = features[template2id[p2[s:s + batch_size]]]
    score[s:s + batch_size] = np.sum(feat1 * feat2, -1).flatten()
  return score


def _peak_bytes(fn):
  tracemalloc.start()
  fn()
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return peak


def _embedding_line(model_path, ijb_dir, num_images, batch_size):
  """IJB's embedding (decode + align + embed, flip) vs verify's on aligned faces."""
  from tfface.data.insightface import ijb_meta  # pylint: disable=g-import-not-at-top
  from tfface.evaluation.ijb import faces  # pylint: disable=g-import-not-at-top
  from tfface.inference import embedding  # pylint: disable=g-import-not-at-top
  meta = ijb_meta.read_ijb_meta(ijb_dir, "IJBC")
  n = min(num_images, meta.num_images)
  meta = dataclasses.replace(meta, image_names=meta.image_names[:n], lines=meta.lines[:n],
                             templates=meta.templates[:n], medias=meta.medias[:n],
                             landmarks=meta.landmarks[:n],
                             detector_scores=meta.detector_scores[:n])
  model = faces.load_model(model_path)
  aligned = np.stack([faces.aligned_face(meta, i) for i in range(n)])
  embedding.raw_and_flipped(model, aligned[:batch_size], batch_size, verbose=False)
  verify_times, ijb_times = [], []
  for _ in range(2):  # alternate, best of two each: the machine is shared
    start = time.perf_counter()
    embedding.raw_and_flipped(model, aligned, batch_size, verbose=False)
    verify_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    faces.embed_images(model, meta, batch_size, flip=True, verbose=False)
    ijb_times.append(time.perf_counter() - start)
  verify_rate, ijb_rate = n / min(verify_times), n / min(ijb_times)
  return (f"ijb embedding: {n} loose crops, batch {batch_size}, flip: decode+align+embed "
          f"{ijb_rate:.1f} images/s vs verify's embedding of the aligned faces "
          f"{verify_rate:.1f} images/s -> x{ijb_rate / verify_rate:.2f}")


def main(argv):
  del argv  # unused
  if _EMBED_MODEL.value and _EMBED_IJB_DIR.value:
    print(_embedding_line(_EMBED_MODEL.value, _EMBED_IJB_DIR.value, _EMBED_IMAGES.value,
                          _BATCH_SIZE.value))
  rng = np.random.default_rng(0)
  num_templates = NUM_ENROL + NUM_VERIFY
  features = rng.standard_normal((num_templates, DIM), dtype=np.float32)
  features /= np.linalg.norm(features, axis=1, keepdims=True)
  template_ids = np.arange(1, num_templates + 1) * 3  # sparse ids, as IJB-C's
  pairs = np.stack([template_ids[rng.integers(0, NUM_ENROL, NUM_PAIRS)],
                    template_ids[NUM_ENROL + rng.integers(0, NUM_VERIFY, NUM_PAIRS)]], axis=1)
  if _ORDER.value == "file":
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]

  times, cpu_times = [], []
  for _ in range(_REPEATS.value):
    start, cpu_start = time.perf_counter(), time.process_time()
    scores = templates.score_pairs(template_ids, features, pairs)
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
  rate = NUM_PAIRS / min(times)

  n = min(_BASELINE_PAIRS.value, NUM_PAIRS)
  start, cpu_start = time.perf_counter(), time.process_time()
  reference = _insightface_scores(features.astype(np.float64), template_ids, pairs[:n, 0],
                                  pairs[:n, 1])
  baseline_rate = n / (time.perf_counter() - start)
  baseline_cpu_rate = n / (time.process_time() - cpu_start)
  max_diff = float(np.abs(scores[:n] - reference).max())

  quarter = pairs[:NUM_PAIRS // 4]
  peak_full = _peak_bytes(lambda: templates.score_pairs(template_ids, features, pairs))
  peak_quarter = _peak_bytes(lambda: templates.score_pairs(template_ids, features, quarter))
  cpu_rate = NUM_PAIRS / min(cpu_times)
  print(f"ijb scoring ({_ORDER.value} order): {num_templates} templates, {NUM_PAIRS} pairs, "
        f"D={DIM}: {min(times):.2f} s = {rate / 1e6:.2f}M pairs/s (times "
        f"{', '.join(f'{t:.2f}' for t in times)} s; {cpu_rate / 1e6:.2f}M pairs per "
        f"CPU-second); InsightFace's loop on {n} pairs {baseline_rate / 1e6:.2f}M pairs/s, "
        f"{baseline_cpu_rate / 1e6:.2f}M per CPU-second -> x{rate / baseline_rate:.1f} "
        f"(x{cpu_rate / baseline_cpu_rate:.1f} per CPU-second); max |score diff| "
        f"{max_diff:.1e}; peak numpy memory {peak_full / 2**20:.0f} MiB at {NUM_PAIRS} pairs, "
        f"{peak_quarter / 2**20:.0f} MiB at {len(quarter)} (scores + int32 rows = 12 "
        f"bytes/pair: {12 * NUM_PAIRS / 2**20:.0f} / {12 * len(quarter) / 2**20:.0f} MiB)")


if __name__ == "__main__":
  app.run(main)
