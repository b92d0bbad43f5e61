"""Input-pipeline throughput against the JPEG decode ceiling (and MXNet's ImageRecordIter).

  python benchmarks/input_pipeline.py --data_dir=TFRECORDS [--batch_size=256]

Measured in one run, on the same images:

* ceiling: a bare Python loop of the pipeline's own decoder
  (`tfface.inference.decode.decode_batch`: `cv2.imdecode`, BGR -> RGB, half
  of the images flipped, as the pipeline flips them) over chunks of 256
  encoded images held in memory, one thread (images/s per core);
* the decode step alone: tf.data over chunks of those images in memory,
  decoded by the pipeline's own `numpy_function` step, one thread (the
  pipeline without reading, shuffling and parsing);
* the same decoder as one tf.data element per image (OpenCV through a
  `numpy_function` per image), one thread: how this benchmark measured its
  ceiling, with TensorFlow's decoder, before the pipeline decoded chunks;
* the serving decoder for reference: `decode_image_tf` (`tf.io.decode_jpeg`
  with the accurate integer IDCT, the same pixels) as a `tf.data` map over
  the same images, one thread;
* pipeline, 1 thread: `tfface.input.pipeline.build_dataset` (TFRecord read,
  shuffle, batched parse, decode, flip, batch) confined to one thread, i.e.
  images/s per core; the ratio to the ceiling is the pipeline's overhead,
  and its ratio to the decode step alone compares it with the decoder as
  tf.data runs it over images in memory (how this benchmark measured its
  ceiling before the pipeline decoded with OpenCV);
* pipeline, all cores: the same with tf.data's default thread pool;
* MXNet `ImageRecordIter` (decode + mirror + normalize, one thread) on the
  `.rec` the TFRecords were transcoded from, when the manifest names it and
  the mxnet interpreter (`TFFACE_MXNET_PYTHON` or .venv-mxnet) exists;
* end to end: steps/s of the tiny synthetic-config model fed by the pipeline
  beside the same model on one cached batch, i.e. whether input keeps up.

The last line is `pipeline images/s: X`, X being the one-thread (per-core)
pipeline figure.
"""
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.data.tfrecord import schema  # noqa: E402
from tfface.inference import decode as decode_lib  # noqa: E402
from tfface.input import pipeline  # noqa: E402

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFRecord directory with manifest.json.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per batch.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 8192, "Images per measurement.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 10, "Timed steps of the tiny model.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 64, "Batch of the end-to-end steps.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating rounds; the best of each is "
                                "reported (robust to other load on the machine).")
_REC_DIR = flags.DEFINE_string("rec_dir", None, "The .rec directory for the MXNet "
                               "comparison (default: the manifest's source).")
flags.mark_flags_as_required(["data_dir"])

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# InsightFace recs start with a header record and end with identity records
# that hold no image, which ImageRecordIter cannot skip: the script first
# copies the image records into a plain .rec.
_MXNET_SCRIPT = """
import os, sys, tempfile, time, mxnet as mx
rec_dir, batch, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
src = mx.recordio.MXIndexedRecordIO(os.path.join(rec_dir, "train.idx"),
                                    os.path.join(rec_dir, "train.rec"), "r")
header, _ = mx.recordio.unpack(src.read_idx(0))
keys = list(range(1, int(header.label[0]))) if header.flag > 0 else list(src.keys)
plain = os.path.join(tempfile.mkdtemp(), "plain.rec")
out = mx.recordio.MXRecordIO(plain, "w")
for key in keys[:n]:
  h, image = mx.recordio.unpack(src.read_idx(key))
  label = h.label if h.flag == 0 else h.label[0]
  out.write(mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0), image))
out.close()
it = mx.io.ImageRecordIter(path_imgrec=plain, data_shape=(3, 112, 112), batch_size=batch,
                           shuffle=False, rand_mirror=True, mean_r=127.5, mean_g=127.5,
                           mean_b=127.5, scale=1 / 128, preprocess_threads=1)
seen, start = 0, None
while seen < n:
  try:
    b = it.next()
  except StopIteration:
    it.reset()
    continue
  b.data[0].wait_to_read()
  if start is None:
    # The first batch pays for thread start-up.
    start, cpu = time.perf_counter(), time.process_time()
  else:
    seen += batch
wall = time.perf_counter() - start
print(seen / wall, (time.process_time() - cpu) / wall)
"""


def _one_thread(ds):
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


def _rate(ds, num_images):
  """(images/s, cores busy) of iterating `ds` for `num_images`, first batch excluded."""
  it = iter(ds)
  next(it)  # start-up: threads, shuffle buffer, tracing
  seen, start, cpu = 0, time.perf_counter(), time.process_time()
  while seen < num_images:
    seen += int(next(it)[0].shape[0])
  wall = time.perf_counter() - start
  return seen / wall, (time.process_time() - cpu) / wall


def load_encoded(data_dir, manifest, num_images):
  """The first `num_images` encoded images of the shards, as one string tensor."""
  files = tf.data.Dataset.from_tensor_slices(manifest.shard_paths(data_dir))
  records = files.interleave(tf.data.TFRecordDataset, cycle_length=4).take(num_images)
  feature = {schema.FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string)}
  return tf.stack([tf.io.parse_single_example(r, feature)[schema.FEATURE_IMAGE]
                   for r in records])


def decode_ceiling(encoded, image_size, num_images, chunk=256):
  """(images/s, cores busy) of the pipeline's decoder over encoded images in memory."""
  data = [bytes(b) for b in encoded.numpy()]
  flips = [i % 2 == 1 for i in range(chunk)]
  seen, start, cpu = 0, time.perf_counter(), time.process_time()
  while seen < num_images:
    for i in range(0, len(data), chunk):
      seen += len(decode_lib.decode_batch(data[i:i + chunk], image_size, flips)[0])
  wall = time.perf_counter() - start
  return seen / wall, (time.process_time() - cpu) / wall


def in_tf_data_rate(encoded, image_size, num_images, chunk=256):
  """(images/s, cores busy) of the pipeline's decode step alone: tf.data over chunks of
  the encoded images in memory, each decoded (half flipped) by the pipeline's own
  `numpy_function` call; one thread. The pipeline minus reading, shuffling and parsing."""
  decode = pipeline._chunk_decoder(image_size, 1, None)  # pylint: disable=protected-access
  ds = tf.data.Dataset.from_tensor_slices(
      {"image": encoded, "label": tf.zeros([len(encoded)], tf.int32),
       "seq": tf.range(len(encoded), dtype=tf.int64)}).repeat().batch(chunk)
  return _rate(_one_thread(ds.map(decode)), num_images)


def per_image_rate(encoded, image_size, num_images):
  """(images/s, cores busy) of the same decoder as one tf.data element per image:
  OpenCV through a `numpy_function` per image, one thread (how this benchmark's
  ceiling was measured, with TensorFlow's decoder, before the pipeline decoded
  chunks with OpenCV)."""
  height, width = image_size

  def decode(data):
    return decode_lib.decode_image(data)[0]

  def element(data):
    image = tf.numpy_function(decode, [data], tf.uint8, stateful=False)
    return tf.ensure_shape(image, [height, width, 3])

  ds = tf.data.Dataset.from_tensor_slices(encoded).repeat().map(element).batch(256)
  return _rate(_one_thread(ds), num_images)


def serving_decoder_rate(encoded, num_images):
  """One-thread images/s of the serving decoder, `decode_image_tf`, as a tf.data map."""
  ds = tf.data.Dataset.from_tensor_slices(encoded).repeat()

  def decode(image):
    return (decode_lib.decode_image_tf(image),)

  return _rate(_one_thread(ds.map(decode).batch(256)), num_images)


def pipeline_rate(data_dir, batch_size, num_images, one_thread):
  ds = pipeline.build_dataset(data_dir, batch_size, pipeline.InputOptions(seed=0))
  return _rate(_one_thread(ds) if one_thread else ds, num_images)


def mxnet_rate(rec_dir, batch_size, num_images):
  """MXNet ImageRecordIter (images/s, cores busy) with one thread, or None."""
  python = os.environ.get("TFFACE_MXNET_PYTHON",
                          os.path.join(_REPO, ".venv-mxnet", "bin", "python"))
  rec = os.path.join(rec_dir or "", "train.rec")
  if not (rec_dir and os.path.isfile(rec) and os.path.exists(python)):
    return None
  out = subprocess.run([python, "-c", _MXNET_SCRIPT, rec_dir, str(batch_size),
                        str(num_images)],
                       capture_output=True, text=True, timeout=900, check=True)
  rate, cores = out.stdout.strip().splitlines()[-1].split()
  return float(rate), float(cores)


def end_to_end(data_dir, manifest, batch_size, steps):
  """Steps/s of the tiny synthetic model fed by the pipeline and on one cached batch."""
  from tfface.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfface.training import task as task_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file(os.path.join(_REPO, "configs", "synthetic.py"))
  image_size = tuple(manifest.image_size or (112, 112))
  task = task_lib.build_task(config, manifest.num_classes, image_size, batch_size, 1,
                             1000, 0.01)
  ds = pipeline.build_dataset(data_dir, batch_size, pipeline.InputOptions(seed=0))

  @tf.function
  def step(images, labels):
    return task.replica_step(images, labels)["loss"]

  def timed(batches):
    float(step(*next(batches)))  # trace
    start = time.perf_counter()
    for _ in range(steps):
      float(step(*next(batches)))
    return steps / (time.perf_counter() - start)

  fed = timed(iter(ds))
  cached = next(iter(ds))
  return fed, timed(iter(lambda: cached, None))


def main(argv):
  del argv  # unused
  data_dir, batch, n = _DATA_DIR.value, _BATCH_SIZE.value, _NUM_IMAGES.value
  manifest = schema.load_manifest(data_dir)
  cores = os.cpu_count()
  print(f"{data_dir}: {manifest.num_images} images; batch {batch}; {n} images per "
        f"measurement; {cores} cores", flush=True)
  # Alternate the measurements and keep each one's best round, so that load
  # from other processes affects them alike.
  encoded = load_encoded(data_dir, manifest, n)
  # The size the pipeline checks every image against (as it does in training).
  image_size = tuple(manifest.image_size or decode_lib.decode_image(
      encoded[0].numpy())[0].shape[:2])
  best = {}
  for _ in range(_REPEATS.value):
    for name, measure in (
        ("ceiling", lambda: decode_ceiling(encoded, image_size, n)),
        ("serving", lambda: serving_decoder_rate(encoded, n)),
        ("in_tf_data", lambda: in_tf_data_rate(encoded, image_size, n)),
        ("per_image", lambda: per_image_rate(encoded, image_size, n)),
        ("one", lambda: pipeline_rate(data_dir, batch, n, one_thread=True)),
        ("full", lambda: pipeline_rate(data_dir, batch, n, one_thread=False))):
      best[name] = max(best.get(name, (0.0, 0.0)), measure())
  (ceiling, c_cores), (one, o_cores), (full, f_cores) = (
      best["ceiling"], best["one"], best["full"])
  print(f"decode ceiling (decode_batch: cv2.imdecode + flip, 1 thread): {ceiling:,.0f} "
        f"images/s ({c_cores:.2f} cores busy)", flush=True)
  print(f"serving decoder (decode_image_tf, tf.data map, 1 thread): "
        f"{best['serving'][0]:,.0f} images/s ({best['serving'][1]:.2f} cores busy)",
        flush=True)
  in_tf, in_tf_cores = best["in_tf_data"]
  print(f"decode step alone in tf.data (in-memory chunks, 1 thread): {in_tf:,.0f} images/s "
        f"({in_tf_cores:.2f} cores busy) = {in_tf / ceiling:.2f} x ceiling", flush=True)
  per_image, per_image_cores = best["per_image"]
  print(f"the same decoder, one tf.data element per image (1 thread): {per_image:,.0f} "
        f"images/s ({per_image_cores:.2f} cores busy)", flush=True)
  print(f"pipeline, 1 thread: {one:,.0f} images/s ({o_cores:.2f} cores busy) = "
        f"{one / ceiling:.2f} x ceiling, {one / in_tf:.2f} x the decode step alone in "
        f"tf.data, {one / per_image:.2f} x the decoder per tf.data element", flush=True)
  print(f"pipeline, all {cores} cores: {full:,.0f} images/s ({f_cores:.2f} cores busy) "
        f"= {full / ceiling:.2f} x the 1-thread ceiling", flush=True)
  mx = mxnet_rate(_REC_DIR.value or manifest.source.get("rec_dir"), batch, n)
  if mx is None:
    print("MXNet ImageRecordIter: skipped (no .rec or no mxnet interpreter)")
  else:
    (mx, mx_cores), per_cpu = mx, (one / o_cores)
    print(f"MXNet ImageRecordIter, preprocess_threads=1: {mx:,.0f} images/s ({mx_cores:.2f} "
          f"cores busy); pipeline / MXNet = {one / mx:.2f}, per CPU second "
          f"{per_cpu / (mx / mx_cores):.2f}", flush=True)
  print(f"per CPU second: pipeline {one / o_cores:,.0f}, ceiling {ceiling / c_cores:,.0f} "
        f"images/s = {(one / o_cores) / (ceiling / c_cores):.2f} x ceiling", flush=True)
  if _TRAIN_STEPS.value:
    fed, cached = end_to_end(data_dir, manifest, _TRAIN_BATCH.value, _TRAIN_STEPS.value)
    print(f"tiny model, batch {_TRAIN_BATCH.value}: {fed:.2f} steps/s fed by the pipeline, "
          f"{cached:.2f} steps/s on a cached batch = {fed / cached:.2f}", flush=True)
  print(f"pipeline images/s: {one:.0f}")


if __name__ == "__main__":
  sys.exit(app.run(main))
