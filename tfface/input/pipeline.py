"""tf.data training input from the TFRecord shards that `rec2tfrecord` writes.

The pipeline reads `manifest.json`, shuffles and interleaves the shard files,
shuffles records, parses them in batches, decodes each image to RGB uint8,
batches with `drop_remainder` and flips a random half of every batch
horizontally. Images stay uint8: models normalize inside the graph, so the
exported model takes raw pixels exactly like InsightFace's.

InsightFace's JPEGs were encoded by OpenCV from BGR arrays and are decoded
by OpenCV. So is the training input: chunks of 256 records go through
`tfface.inference.decode.decode_batch` (`cv2.imdecode`, BGR -> RGB, the
flip), the decoder verification uses and whose pixels the SavedModel's
`decode_image_tf` reproduces; TensorFlow's default fast IDCT would change
two thirds of the pixel values of a q95 face by up to 17 levels. One Python
call per chunk runs on `tf.data`'s threads; OpenCV releases the GIL while it
decodes, so chunks decode in parallel.

Bad data never crashes an epoch: a record whose image does not decode (or
decodes to the wrong size) is dropped and counted in `DecodeStats`, which the
trainer logs. A label outside `[0, num_classes)` stops the input with an
error naming the directory and the record's source key (`LABEL_ERROR`).

`WorkerInput` feeds a `tf.distribute` strategy: every worker reads its own
subset of the shard files into one checkpointable iterator, whose position
(file offsets, shuffle buffer) the training checkpoint saves, so a resumed
run continues the stream exactly with O(shards) reads instead of replaying
it; each step splits the worker's batch among its local replicas.
"""
import atexit
import dataclasses
import functools
import threading
import time

import tensorflow as tf

from tfface.data.tfrecord import schema
from tfface.inference import decode as decode_lib
from tfface.input import sampler as sampler_lib

AUTOTUNE = tf.data.AUTOTUNE
LABEL_ERROR = "labels outside [0, num_classes)"
# Records parsed per `tf.io.parse_example` call: parsing in batches is several
# times cheaper than one record at a time.
_PARSE_BATCH = 256
# Records a shard reader hands to the interleave at a time.
_READ_BATCH = 32
_FEATURES = {
    schema.FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
    schema.FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64),
    schema.FEATURE_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


@dataclasses.dataclass
class InputOptions:
  """How the training input behaves; the defaults are the fast training mode.

  Attributes:
    shuffle: shuffle shard files and records (off only for tests that need
      the exact file order).
    shuffle_buffer: records in the record-level shuffle buffer. The transcode
      already shuffled globally, so a few thousand suffice.
    random_flip: flip a random half of each batch left-right (InsightFace's
      only default augmentation).
    deterministic: reproducible order (seeded shuffles, ordered interleave);
      slower, for tests and exact resumption.
    seed: seed of the shuffles and flips; None draws one.
    images_per_identity: if set, batches are identity-balanced: P identities
      x K = images_per_identity images (see `tfface.input.sampler`).
    cycle_length: shard files read concurrently.
    decode_parallelism: chunks of records decoded concurrently (AUTOTUNE:
      one per core).
  """

  shuffle: bool = True
  shuffle_buffer: int = 8192
  random_flip: bool = True
  deterministic: bool = False
  seed: int | None = None
  images_per_identity: int | None = None
  cycle_length: int = 16
  decode_parallelism: int = AUTOTUNE


class DecodeStats:
  """Counts records dropped because their image did not decode to the expected shape.

  The count lives in a host variable that the input pipeline updates, so the
  trainer can log it without touching the data.
  """

  def __init__(self):
    with tf.device("/cpu:0"):
      self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False,
                                  name="skipped_records")

  @property
  def variable(self):
    return self._skipped

  @property
  def skipped(self) -> int:
    """Records dropped so far by the pipelines that share this object."""
    return int(self._skipped.numpy())


def check_shard_count(data_dir: str, num_shards: int, num_input_pipelines: int):
  """Raises ValueError when the files cannot be split among the input pipelines."""
  if num_shards < num_input_pipelines:
    raise ValueError(
        f"{data_dir}: {num_shards} shard files for {num_input_pipelines} input "
        f"pipelines (one per worker); every pipeline reads whole files, so "
        f"re-transcode with rec2tfrecord --num_shards={num_input_pipelines} or more")


def check_first_image(data_dir, manifest, image_size):
  """Decodes the first record of the first shard and checks its size.

  Wrongly sized images are dropped one by one during training; a whole
  dataset of them would leave the input empty, so this is caught at start.

  Raises:
    ValueError: the image does not decode or is not `image_size`.
  """
  path = manifest.shard_paths(data_dir)[0]
  for record in tf.data.TFRecordDataset(path).take(1):
    parsed = tf.io.parse_single_example(record, _FEATURES)
    key = int(parsed[schema.FEATURE_KEY])
    try:
      shape = decode_lib.decode_image(parsed[schema.FEATURE_IMAGE].numpy())[0].shape
    except ValueError as e:
      raise ValueError(f"{path}: the first record (source key {key}) does not "
                       f"decode as an image ({str(e).split(': ', 1)[-1]})") from None
    if shape[:2] != tuple(image_size):
      raise ValueError(f"{path}: the first record (source key {key}) is "
                       f"{shape[0]}x{shape[1]}, the model takes "
                       f"{image_size[0]}x{image_size[1]}")


def _read_file(path):
  """One shard's records, in groups of `_READ_BATCH`."""
  return tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(_READ_BATCH)


def _parse_batch(records, data_dir, num_classes):
  """Parses a batch of serialized Examples; asserts labels are in range."""
  parsed = tf.io.parse_example(records, _FEATURES)
  labels, keys = parsed[schema.FEATURE_LABEL], parsed[schema.FEATURE_KEY]
  if num_classes is not None:
    bad = tf.logical_or(labels < 0, labels >= num_classes)
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"{data_dir}: {LABEL_ERROR}, num_classes={num_classes} from "
         f"{schema.MANIFEST_NAME}; source keys and labels:",
         tf.boolean_mask(keys, bad), tf.boolean_mask(labels, bad)], summarize=8)
    with tf.control_dependencies([check]):
      labels = tf.identity(labels)
  return {"image": parsed[schema.FEATURE_IMAGE], "label": tf.cast(labels, tf.int32),
          "key": keys}


def _number(first):
  """Numbers the records of parsed chunks consecutively from `first` (a scan)."""

  def step(next_seq, chunk):
    n = tf.shape(chunk["label"], out_type=tf.int64)[0]
    chunk = dict(chunk, seq=next_seq + tf.range(n, dtype=tf.int64))
    return next_seq + n, chunk

  return tf.constant(first, tf.int64), step


def _flip_flags(seq, flip_seed):
  """Per-record coin flips from a multiplicative hash of the record number.

  Keyed by the record number (not by the chunk) so that a resumed run flips
  the same records, and computed for a whole chunk at once: a random op per
  image costs more than the flip itself.
  """
  mixed = tf.bitwise.bitwise_xor(seq, tf.constant(flip_seed, tf.int64))
  hashed = mixed * tf.constant(-7046029254386353131, tf.int64)  # 0x9E3779B97F4A7C15
  return tf.equal(tf.bitwise.bitwise_and(tf.bitwise.right_shift(hashed, 40), 1), 1)


class _OpenCVDecoder:
  """`decode_lib.decode_batch` for `tf.data` threads, stopped before the interpreter exits.

  The pipeline's threads call into Python to decode. A native thread that
  enters Python after interpreter finalization has begun is killed mid-call
  (the process aborts: "terminate called without an active exception"). So
  an `atexit` hook, which runs before finalization, stops the decoder: later
  calls fail fast (the pipeline then has an error to hand out, to a consumer
  that is gone), and the hook returns once the calls have stopped, i.e. the
  pipeline's buffers are full and its threads wait on them, not on Python.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._closed = False
    self._calls = 0  # calls entered, including refused ones
    self._running = 0

  def __call__(self, flips, data, height, width):
    with self._lock:
      self._calls += 1
      if self._closed:
        raise RuntimeError("tfface input pipeline stopped: the interpreter is exiting")
      self._running += 1
    try:
      return decode_lib.decode_batch(data, (height, width), flips)
    finally:
      with self._lock:
        self._running -= 1

  def close(self, quiet_s=0.05, timeout_s=10.0):
    """Refuses further calls; waits until none runs or arrives for `quiet_s`."""
    with self._lock:
      self._closed = True
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
      with self._lock:
        state = (self._calls, self._running)
      if state == last and not state[1]:
        return True
      last = state
      time.sleep(quiet_s)  # releases the GIL to the pipeline's threads
    return False


_DECODER = _OpenCVDecoder()
atexit.register(_DECODER.close)


def _chunk_decoder(image_size, flip_seed, stats):
  """Decodes one chunk of parsed records with OpenCV (`decode_lib.decode_batch`).

  One Python call per chunk: OpenCV releases the GIL while it decodes, so
  chunks decode in parallel. A record whose image does not decode, or
  decodes to another size, is dropped and counted in `stats`.
  """
  height, width = (int(v) for v in image_size)

  def decode(flips, data):
    return _DECODER(flips, data, height, width)

  def decode_chunk(chunk):
    size = tf.shape(chunk["label"], out_type=tf.int64)[0]
    if flip_seed is None:
      flips = tf.zeros([size], tf.bool)
    else:
      flips = _flip_flags(chunk["seq"], flip_seed)
    images, keep = tf.numpy_function(decode, [flips, chunk["image"]], [tf.uint8, tf.bool],
                                     stateful=False)
    images = tf.ensure_shape(images, [None, height, width, 3])
    labels = tf.boolean_mask(chunk["label"], tf.ensure_shape(keep, [None]))
    if stats is not None:
      dropped = size - tf.shape(labels, out_type=tf.int64)[0]
      with tf.control_dependencies([stats.variable.assign_add(dropped)]):
        labels = tf.identity(labels)
    return images, labels

  return decode_chunk


def build_dataset(data_dir, batch_size, options=None, input_context=None,
                  image_size=None, num_classes=None, repeat=True, start_batch=0,
                  stats=None, manifest=None):
  """The training input of one pipeline: batches of uint8 RGB images and labels.

  Args:
    data_dir: directory with the TFRecord shards and `manifest.json`.
    batch_size: images per batch (per replica when distributed).
    options: `InputOptions`; the defaults are the fast training mode.
    input_context: `tf.distribute.InputContext`; this pipeline then reads
      only its share of the shard files.
    image_size: `(height, width)`; defaults to the manifest's.
    num_classes: labels must be in `[0, num_classes)`; defaults to the
      manifest's.
    repeat: cycle over the data forever (training) or read it once.
    start_batch: batches already consumed by an interrupted run; in
      deterministic mode they are skipped so that a resumed run sees the
      data an uninterrupted one would have.
    stats: optional `DecodeStats` that counts dropped records.
    manifest: an already loaded `schema.Manifest` of `data_dir`.

  Returns:
    A `tf.data.Dataset` of `(images uint8 [batch, H, W, 3], labels int32 [batch])`.

  Raises:
    FileNotFoundError: no manifest, or shard files it lists are missing.
    ValueError: too few shard files for the input pipelines, or an image
      size the manifest does not give.
  """
  options = options or InputOptions()
  manifest = manifest or schema.load_manifest(data_dir)
  files = manifest.shard_paths(data_dir)
  missing = [f for f in files if not tf.io.gfile.exists(f)]
  if missing:
    raise FileNotFoundError(f"{data_dir}/{schema.MANIFEST_NAME} lists {len(missing)} shard "
                            f"file(s) that do not exist, e.g. {missing[0]}")
  num_classes = manifest.num_classes if num_classes is None else num_classes
  image_size = tuple(image_size or manifest.image_size or ())
  if len(image_size) != 2:
    raise ValueError(f"{data_dir}/{schema.MANIFEST_NAME}: no image_size; pass image_size")
  seed = options.seed
  if seed is None:
    seed = int(tf.random.uniform([], maxval=2**31 - 1, dtype=tf.int64))
  if input_context is not None:
    check_shard_count(data_dir, len(files), input_context.num_input_pipelines)
    files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
    # Each pipeline shuffles and flips with its own stream.
    seed = seed + 7919 * input_context.input_pipeline_id

  ds = tf.data.Dataset.from_tensor_slices(files)
  if options.shuffle:
    # Shuffle before repeat so that every epoch visits each file once.
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  # The parallel interleave hands over groups of records: one at a time
  # cost 2.5 us of the ~12 us per record that the pipeline spends besides
  # decoding (benchmarks/input_pipeline.py).
  ds = ds.interleave(
      _read_file, cycle_length=min(options.cycle_length, len(files)), block_length=1,
      num_parallel_calls=AUTOTUNE, deterministic=options.deterministic).unbatch()
  if options.shuffle:
    ds = ds.shuffle(options.shuffle_buffer, seed=seed + 1)
  # Records an interrupted run consumed (deterministic mode only).
  skip = start_batch * batch_size if options.deterministic else 0
  if skip and not options.images_per_identity:
    ds = ds.skip(skip)
  ds = ds.batch(_PARSE_BATCH).map(
      functools.partial(_parse_batch, data_dir=data_dir, num_classes=num_classes),
      num_parallel_calls=AUTOTUNE, deterministic=options.deterministic)
  if options.images_per_identity:
    ds = sampler_lib.identity_balanced(ds.unbatch(), options.images_per_identity)
    if skip:
      ds = ds.skip(skip)
    ds = ds.batch(_PARSE_BATCH)

  ds = ds.scan(*_number(skip))
  flip_seed = seed + 2 if options.random_flip else None
  # Chunks decode in parallel, one thread each; each comes out as one batch,
  # so deterministic mode keeps records (and P x K groups) in order.
  ds = ds.map(_chunk_decoder(image_size, flip_seed, stats),
              num_parallel_calls=options.decode_parallelism,
              deterministic=options.deterministic)
  # Decoded chunks arrive as batches. rebatch passes a chunk of exactly the
  # batch size through without copying it (measured); it joins short chunks
  # (records dropped) and splits larger ones.
  ds = ds.rebatch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)

  tf_options = tf.data.Options()
  tf_options.deterministic = options.deterministic
  # The iterator's position is checkpointed; the label assertion and the
  # skipped-record counter are the dataset's only stateful ops, and neither
  # holds state that the position needs.
  tf_options.experimental_external_state_policy = (
      tf.data.experimental.ExternalStatePolicy.IGNORE)
  # One thread per op: tf.data already runs many elements in parallel.
  tf_options.threading.max_intra_op_parallelism = 1
  return ds.with_options(tf_options)


class WorkerInput:
  """This worker's share of the training input for a strategy, resumable exactly.

  One `build_dataset` pipeline per worker (machine) yields the batch of all
  its local replicas; `next_replica_batches()` (inside a `tf.function`) takes
  one and hands each local replica its slice. The pipeline's iterator is a
  plain `tf.data` iterator, which `tf.train.Checkpoint` saves and restores
  (`iterator`): the files' offsets and the buffers, not a count of records
  to replay.

  The batch is prefetched on the host and each replica's slice copied to its
  device at the start of its step (0.5 ms for 128 faces over PCIe 3): a
  device-side prefetch (`experimental_fetch_to_device`) would give up the
  checkpointable iterator, which `tf.distribute` iterators are not.

  Args:
    strategy: the run's `tf.distribute.Strategy`.
    data_dir: the TFRecord directory.
    global_batch_size: images per step over all replicas.
    options: `InputOptions`.
    num_workers: workers (machines) in the cluster.
    worker_index: this worker's index.
    start_step: steps an interrupted run took; used only to replay the
      stream (deterministic mode) when no saved position is restored.
    **kwargs: passed to `build_dataset` (image_size, num_classes, stats,
      manifest).

  Raises:
    ValueError: fewer shard files than workers, or a global batch that the
      replicas cannot share evenly.
  """

  def __init__(self, strategy, data_dir, global_batch_size, options=None, num_workers=1,
               worker_index=0, start_step=0, **kwargs):
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
      raise ValueError(f"global batch {global_batch_size} does not split evenly over "
                       f"{replicas} replicas")
    self.strategy = strategy
    self.local_replicas = replicas // num_workers
    self.first_replica = worker_index * self.local_replicas
    worker_batch = global_batch_size // replicas * self.local_replicas
    context = tf.distribute.InputContext(num_input_pipelines=num_workers,
                                         input_pipeline_id=worker_index,
                                         num_replicas_in_sync=replicas)
    self.dataset = build_dataset(data_dir, worker_batch, options, input_context=context,
                                 start_batch=start_step, **kwargs)
    with tf.device("/cpu:0"):
      self.iterator = iter(self.dataset)

  def next_replica_batches(self):
    """`(images, labels)` for `strategy.run`: one slice per local replica."""
    images, labels = next(self.iterator)
    if self.local_replicas == 1:
      # One replica on this worker (one device, or a multi-worker cluster of
      # one GPU each): the batch is its own, with its static shape intact.
      return images, labels
    parts = (tf.split(images, self.local_replicas), tf.split(labels, self.local_replicas))

    def slice_for(context):
      index = context.replica_id_in_sync_group - self.first_replica
      return parts[0][index], parts[1][index]

    return self.strategy.experimental_distribute_values_from_function(slice_for)
