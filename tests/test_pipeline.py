"""The tf.data training input: colours, flips, coverage, determinism, bad data, sharding."""
import collections
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from tfface.input import pipeline
from tfface.input import sampler
from tfface.data.tfrecord import schema
import training_data


def _collect(ds):
  images, labels = [], []
  for x, y in ds:
    images.append(x.numpy())
    labels.append(y.numpy())
  return np.concatenate(images), np.concatenate(labels)


def _options(**kw):
  kw.setdefault("seed", 3)
  kw.setdefault("deterministic", True)
  return pipeline.InputOptions(**kw)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("labelled"))
  manifest, rgb, labels = training_data.labelled_dataset(directory, num_classes=6,
                                                         per_class=4, num_shards=2)
  return directory, manifest, rgb, labels


def test_colours_are_rgb_and_flips_mirror(tmp_path):
  # Left half pure red, right half blue, encoded from BGR as InsightFace did.
  rgb = np.zeros((112, 112, 3), np.uint8)
  rgb[:, :56, 0] = 255
  rgb[:, 56:, 2] = 255
  training_data.write_dataset(str(tmp_path), [training_data.jpeg(rgb)] * 64, [0] * 64,
                              num_shards=1, num_classes=1)
  images, _ = _collect(pipeline.build_dataset(str(tmp_path), 16, _options(),
                                              repeat=False))
  assert images.dtype == np.uint8 and images.shape == (64, 112, 112, 3)
  left_red = images[:, 50:60, 10, 0].mean(axis=1) > 200
  right_red = images[:, 50:60, 100, 0].mean(axis=1) > 200
  assert np.all(left_red != right_red)  # every image is the original or its mirror
  assert np.all(images[left_red][:, :, 10, 2] < 40)  # red is in channel 0: RGB
  assert 16 <= left_red.sum() <= 48  # about half flipped (seeded: not all, not none)


def test_one_epoch_sees_every_record_once_with_its_label(labelled):
  directory, _, rgb, labels = labelled
  images, got = _collect(pipeline.build_dataset(
      directory, 4, _options(random_flip=False, deterministic=False), repeat=False))
  assert sorted(got.tolist()) == sorted(labels)
  decoded = {tuple(np.round(im.mean(axis=(0, 1)))) for im in images}
  expected = {tuple(np.round(im.mean(axis=(0, 1)))) for im in rgb}
  assert len(decoded) == 24
  # JPEG changes pixel means by a fraction of a level only.
  for mean in decoded:
    assert min(np.abs(np.subtract(mean, e)).max() for e in expected) <= 2


def test_deterministic_mode_repeats_and_seed_changes_order(labelled):
  directory = labelled[0]
  first = _collect(pipeline.build_dataset(directory, 4, _options(), repeat=False))
  again = _collect(pipeline.build_dataset(directory, 4, _options(), repeat=False))
  other = _collect(pipeline.build_dataset(directory, 4, _options(seed=4), repeat=False))
  np.testing.assert_array_equal(first[0], again[0])
  np.testing.assert_array_equal(first[1], again[1])
  assert not np.array_equal(first[1], other[1])


def test_start_batch_resumes_the_same_stream(labelled):
  directory = labelled[0]
  full = pipeline.build_dataset(directory, 4, _options(), repeat=True)
  full_batches = [x.numpy() for x, _ in full.take(5)]
  resumed = pipeline.build_dataset(directory, 4, _options(), repeat=True, start_batch=2)
  resumed_batches = [x.numpy() for x, _ in resumed.take(3)]
  for a, b in zip(full_batches[2:], resumed_batches):
    np.testing.assert_array_equal(a, b)


def test_undecodable_and_missized_records_are_skipped_and_counted(tmp_path):
  good = [training_data.jpeg(training_data.face_like(i, 0)) for i in range(10)]
  truncated = good[0][:len(good[0]) // 2]
  garbage = b"\xff\xd8\xff" + bytes(range(256)) * 4
  small = training_data.jpeg(training_data.face_like(0, 1, size=64))
  images = good[:3] + [truncated] + good[3:6] + [garbage, small] + good[6:]
  training_data.write_dataset(str(tmp_path), images, list(range(13)), num_shards=1,
                              num_classes=13)
  stats = pipeline.DecodeStats()
  _, labels = _collect(pipeline.build_dataset(
      str(tmp_path), 1, _options(shuffle=False), repeat=False, stats=stats))
  assert sorted(labels.tolist()) == [0, 1, 2, 4, 5, 6, 9, 10, 11, 12]
  assert stats.skipped == 3


def test_label_outside_range_is_an_error_naming_the_key(tmp_path):
  images = [training_data.jpeg(training_data.face_like(i, 0)) for i in range(4)]
  training_data.write_dataset(str(tmp_path), images, [0, 1, 7, 2], num_shards=1,
                              num_classes=3, keys=[10, 11, 12, 13])
  ds = pipeline.build_dataset(str(tmp_path), 2, _options(), repeat=False)
  with pytest.raises(tf.errors.InvalidArgumentError) as info:
    _collect(ds)
  assert pipeline.LABEL_ERROR in info.value.message
  assert "num_classes=3" in info.value.message and "[12]" in info.value.message


def test_input_context_shards_files_and_rejects_too_few(labelled):
  directory = labelled[0]
  seen = collections.Counter()
  for pipeline_id in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=pipeline_id)
    _, labels = _collect(pipeline.build_dataset(directory, 2, _options(),
                                                input_context=context, repeat=False))
    seen.update(labels.tolist())
    assert len(labels) == 12  # one of the two shard files each
  assert seen == collections.Counter(labelled[3])
  context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=0)
  with pytest.raises(ValueError, match="2 shard files for 3 input pipelines"):
    pipeline.build_dataset(directory, 2, _options(), input_context=context)


def test_identity_balanced_batches(tmp_path):
  manifest, _, _ = training_data.labelled_dataset(str(tmp_path), num_classes=8,
                                                  per_class=10, num_shards=2)
  assert manifest.num_images == 80
  ds = pipeline.build_dataset(str(tmp_path), 10, _options(images_per_identity=5,
                                                          shuffle_buffer=80))
  for _, labels in ds.take(6):
    groups = labels.numpy().reshape(2, 5)
    assert np.all(groups == groups[:, :1])  # K = 5 images of one identity per group
  with pytest.raises(ValueError, match="not a multiple"):
    sampler.check_batch(12, 5)


def test_check_first_image_rejects_other_sizes(tmp_path):
  image = training_data.jpeg(training_data.face_like(0, 0, size=96))
  manifest = training_data.write_dataset(str(tmp_path), [image] * 2, [0, 0],
                                         num_shards=1, image_size=(96, 96))
  with pytest.raises(ValueError, match="is 96x96, the model takes 112x112"):
    pipeline.check_first_image(str(tmp_path), manifest, (112, 112))
  pipeline.check_first_image(str(tmp_path), manifest, (96, 96))
  broken = str(tmp_path / "broken")
  manifest = training_data.write_dataset(broken, [b"not an image", image], [0, 0],
                                         num_shards=1, image_size=(96, 96))
  with pytest.raises(ValueError, match=r"train-00000-of-00001.tfrecord: the first record "
                     r"\(source key 1\) does not decode as an image \(cannot decode"):
    pipeline.check_first_image(broken, manifest, (96, 96))


def test_missing_manifest_names_the_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    pipeline.build_dataset(str(tmp_path), 2)
  assert schema.MANIFEST_NAME == "manifest.json"


def _astronaut_crops(count):
  """Real photo crops (skimage's astronaut), q95 JPEGs as InsightFace packed them."""
  import cv2  # pylint: disable=g-import-not-at-top
  from skimage import data as skimage_data  # pylint: disable=g-import-not-at-top
  photo = skimage_data.astronaut()
  rng = np.random.default_rng(0)
  crops = []
  for _ in range(count):
    y, x = rng.integers(0, 400, 2)
    crops.append(np.ascontiguousarray(photo[y:y + 112, x:x + 112]))
  encoded = [training_data.jpeg(c, quality=95) for c in crops]
  decoded = [cv2.cvtColor(cv2.imdecode(np.frombuffer(e, np.uint8), cv2.IMREAD_COLOR),
                          cv2.COLOR_BGR2RGB) for e in encoded]
  return encoded, decoded


def test_training_input_decodes_pixel_for_pixel_as_opencv(tmp_path):
  # InsightFace decodes with OpenCV; verification and serving do too. The
  # training input used TensorFlow's fast IDCT, 66% of pixels off by up to 17.
  encoded, expected = _astronaut_crops(8)
  training_data.write_dataset(str(tmp_path), encoded, list(range(8)), num_shards=1)
  images, labels = _collect(pipeline.build_dataset(
      str(tmp_path), 4, _options(shuffle=False, random_flip=False), repeat=False))
  for image, label in zip(images, labels):
    np.testing.assert_array_equal(image, expected[label])
  # Negative control: TensorFlow's default decoder differs on these images.
  fast = tf.io.decode_jpeg(encoded[0], channels=3).numpy()
  assert np.mean(fast != expected[0]) > 0.1


def test_worker_input_position_restores_exactly(tmp_path):
  # The position (file offsets, shuffle buffer) is what the checkpoint
  # saves: restoring it continues the stream with no replay, also after
  # records that were dropped as undecodable.
  images = [training_data.jpeg(training_data.face_like(i % 6, i)) for i in range(48)]
  images[2] = b"not a jpeg"
  training_data.write_dataset(str(tmp_path), images, [i % 6 for i in range(48)],
                              num_shards=3, num_classes=6)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")

  def make():
    return pipeline.WorkerInput(strategy, str(tmp_path), 4,
                                _options(shuffle_buffer=8, seed=5))

  @tf.function
  def take(worker_input):
    return worker_input.next_replica_batches()

  first = make()
  for _ in range(3):
    take(first)
  saved = tf.train.Checkpoint(iterator=first.iterator).write(str(tmp_path / "pos"))
  expected = [take(first)[1].numpy().tolist() for _ in range(6)]
  second = make()
  tf.train.Checkpoint(iterator=second.iterator).read(saved).assert_consumed()
  assert [take(second)[1].numpy().tolist() for _ in range(6)] == expected
  # Replaying by counting records lands elsewhere: one record was dropped.
  replayed = pipeline.WorkerInput(strategy, str(tmp_path), 4,
                                  _options(shuffle_buffer=8, seed=5), start_step=3)
  assert [take(replayed)[1].numpy().tolist() for _ in range(6)] != expected


_EXIT_SCRIPT = """
import atexit, sys
from tfface.input import pipeline
if sys.argv[2] == "unguarded":  # the negative control: no hook stopping the decoder
  atexit.unregister(pipeline._DECODER.close)
ds = pipeline.build_dataset(sys.argv[1], 16, pipeline.InputOptions(seed=0))
it = iter(ds)
next(it)
print("leaving with the pipeline still decoding", flush=True)
"""


def test_exiting_while_the_pipeline_decodes_exits_cleanly(tmp_path):
  # tf.data's threads call into Python to decode; one that enters Python after
  # interpreter finalization has begun aborts the process ("terminate called
  # without an active exception", exit 134). The pipeline's atexit hook stops
  # the decoder first. Without it (the control) the same script aborted in
  # 3 of 3 runs on the development machine.
  data = str(tmp_path / "data")
  training_data.labelled_dataset(data, num_classes=40, per_class=20, num_shards=4)
  for _ in range(3):
    proc = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT, data, "guarded"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and "terminate" not in proc.stderr, proc.stderr[-2000:]
    assert "still decoding" in proc.stdout
