"""Partial FC through tools/train.py: equal to the replicated head at 1.0, re-sharded resume, learning.

Each run is a fresh tools/train.py process on two logical CPUs
(`--cpu_replicas=2`): logical devices must be set before TensorFlow starts.
The module-level checks (sampling, the numpy softmax, restores on 1 and 3
replicas, two worker processes) are in test_partial_fc*.py.
"""
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TOOLS
from conftest import run_tool
from conftest import run_worker_cluster
from conftest import tensorboard_scalars
import tfface.models  # noqa: F401  (registers the layers that .keras files need)
from tfface.training import partial_fc
import training_data



def test_partial_fc_at_one_trains_like_the_replicated_head_and_resumes_resharded(tmp_path):
  data = str(tmp_path / "data")
  training_data.labelled_dataset(data, num_classes=9, per_class=8, num_shards=2)
  common = ["--dataset=synthetic", f"--data_dir={data}", "--total_steps=3",
            "--checkpoint_every=3", "--batch_size=4", "--cpu_replicas=2",
            "--config.input.deterministic=True", "--config.input.shuffle=False",
            "--config.log_every=1", "--config.verify_at_start=False", "--config.val_dir=",
            # Without XLA on both sides: the comparison is then op for op.
            "--config.jit_compile=False", "--lr=0.05"]
  replicated, sharded = tmp_path / "replicated", tmp_path / "sharded"
  run_tool("train", *common, f"--workdir={replicated}")
  out = run_tool("train", *common, f"--workdir={sharded}", "--config.head.partial_fc=True",
                 "--config.head.sample_rate=1.0").stdout
  assert "Partial FC: 9 class centres in 2 shard(s), sample rate 1" in out, out
  loss_a, loss_b = tensorboard_scalars(replicated, "train/loss"), tensorboard_scalars(sharded, "train/loss")
  assert sorted(loss_a) == sorted(loss_b) == [1, 2, 3]
  for step in loss_a:
    assert loss_b[step] == pytest.approx(loss_a[step], rel=1e-5), step
  assert loss_a[3] != loss_a[1]
  # The same weights after three updates: backbone and every class centre.
  # Compared as a whole (float drift through BatchNorm moved single elements
  # by up to 1.6e-5); a missed or doubled update would move them by ~lr.
  a = keras.saving.load_model(replicated / "backbone.keras")
  b = keras.saving.load_model(sharded / "backbone.keras")
  diff = np.sqrt(sum(np.sum((x.numpy() - y.numpy()) ** 2) for x, y in zip(a.weights,
                                                                          b.weights)))
  norm = np.sqrt(sum(np.sum(x.numpy() ** 2) for x in a.weights))
  assert diff < 1e-5 * norm, diff / norm
  head = tf.train.load_checkpoint(str(replicated / "ckpt")).get_tensor(
      "head/kernel/.ATTRIBUTES/VARIABLE_VALUE")
  centres = partial_fc.read_kernel(str(sharded / "ckpt"), 3)
  np.testing.assert_allclose(centres, head, rtol=1e-4, atol=1e-5)
  # Resumed on one replica: the two saved shards become one, same centres.
  resumed = run_tool("train", *[c for c in common if not c.startswith("--cpu_replicas")
                                and not c.startswith("--total_steps")],
                     "--total_steps=4", "--cpu_replicas=1", "--batch_size=8",
                     f"--workdir={sharded}", "--config.head.partial_fc=True",
                     "--config.head.sample_rate=1.0").stdout
  assert "Partial FC centres of step 3 from 2 shard(s) into 1" in resumed, resumed
  assert re.search(r"^step 4/4 loss ", resumed, re.M), resumed


def _held_out_accuracy(stdout):
  return float(re.search(r"^Accuracy-Flip after training: (0\.\d{4})$", stdout,
                         re.M).group(1))


@pytest.mark.slow
def test_partial_fc_at_half_learns_like_the_replicated_head(tmp_path):
  # The synthetic faces, smaller than the demo's; both runs on two replicas,
  # same steps; the held-out identities of synth_val decide. Deterministic
  # input: both runs see the same batches, so the difference is the sampling,
  # not tf.data's ordering (0.8958 vs 0.9008, the same in two runs).
  rec, tfr = tmp_path / "rec", tmp_path / "tfrecords"
  run_tool("make_synthetic", f"--output_dir={rec}", "--num_identities=150",
           "--images_per_identity=20", "--num_pairs=1200")
  run_tool("rec2tfrecord", f"--rec_dir={rec}", f"--output_dir={tfr}")
  common = ["--dataset=synthetic", f"--data_dir={tfr}", f"--val_bins={rec}/synth_val.bin",
            "--total_steps=240", "--batch_size=16", "--cpu_replicas=2",
            "--checkpoint_every=1000", "--config.verify_at_start=False",
            "--config.log_every=40", "--config.input.deterministic=True"]
  replicated = run_tool("train", *common, f"--workdir={tmp_path / 'replicated'}",
                        timeout=900).stdout
  sharded = run_tool("train", *common, f"--workdir={tmp_path / 'sharded'}",
                     "--config.head.partial_fc=True", "--config.head.sample_rate=0.5",
                     timeout=900).stdout
  a, b = _held_out_accuracy(replicated), _held_out_accuracy(sharded)
  print(f"held-out Accuracy-Flip: replicated {a:.4f}, partial_fc 0.5 {b:.4f}")
  assert a >= 0.8, replicated  # both learned something worth comparing
  assert abs(a - b) <= 0.03, (a, b)


@pytest.mark.slow
def test_two_workers_train_partial_fc_with_sampling(tmp_path):
  # MultiWorkerMirroredStrategy's gather lost the batch's static size, which
  # sampling (sample_rate < 1) needs; each worker holds and saves its shard.
  data = str(tmp_path / "data")
  training_data.labelled_dataset(data, num_classes=9, per_class=8, num_shards=2)
  workdir = tmp_path / "shared"
  outputs = run_worker_cluster(
      [sys.executable, str(TOOLS / "train.py"), "--dataset=synthetic", f"--data_dir={data}",
       f"--workdir={workdir}", "--total_steps=4", "--checkpoint_every=2", "--batch_size=4",
       "--strategy=multi_worker", "--config.log_every=2", "--config.verify_at_start=False",
       "--config.val_dir=", "--config.head.partial_fc=True", "--config.head.sample_rate=0.5"])
  shas = [re.search(r"weights sha256 ([0-9a-f]{64})", out).group(1) for out, _ in outputs]
  assert shas[0] == shas[1]  # the same backbone on both workers
  assert "Partial FC: 9 class centres in 2 shard(s), sample rate 0.5" in outputs[0][0]
  # Each worker wrote its own shard and its own input position.
  kernel = partial_fc.read_kernel(str(workdir / "ckpt"), 4)
  assert kernel.shape == (9, 128) and np.isfinite(kernel).all()
  assert (workdir / "ckpt" / "worker-0").is_dir() and (workdir / "ckpt" / "worker-1").is_dir()
