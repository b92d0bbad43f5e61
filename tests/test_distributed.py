"""MirroredStrategy on two logical CPUs and MultiWorkerMirroredStrategy on 127.0.0.1.

Logical devices must be set before TensorFlow initializes, so every run is a
fresh `tools/train.py` process.
"""
import glob
import os
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
import training_data

STEPS = 6



def _mirrored_halves_dataset(directory, per_replica=4, steps=STEPS):
  """Records in which every per-replica batch is followed by an identical one.

  Then two replicas see the same images as one device with twice the batch,
  BatchNorm statistics included, and the two runs must agree to rounding.
  """
  images, labels = [], []
  for step in range(steps + 1):
    half = [(3 * step + i) % 10 for i in range(per_replica)]
    for _ in range(2):
      images += [training_data.jpeg(training_data.face_like(c, step)) for c in half]
      labels += half
  training_data.write_dataset(directory, images, labels, num_shards=1, num_classes=10)


# Two gradient paths: Keras sums the replicas' gradients inside `apply` (the
# default), or the task sums them itself to clip by their global norm.
# Unclipped, lr 0.05 made the runs diverge chaotically (1.6% at step 6 from
# identical steps 1-2); lr 0.01 keeps the drift near 1e-3.
@pytest.mark.parametrize("options", [["--lr=0.01"], ["--lr=0.05", "--config.clip_norm=1.0"]],
                         ids=["keras_sum", "clipped"])
def test_mirrored_two_cpus_matches_one_device(tmp_path, options):
  data = str(tmp_path / "data")
  _mirrored_halves_dataset(data)
  common = ["--dataset=synthetic", f"--data_dir={data}", f"--total_steps={STEPS}",
            "--checkpoint_every=100",
            "--config.input.shuffle=False", "--config.input.random_flip=False",
            "--config.input.deterministic=True", "--config.log_every=1",
            "--config.verify_at_start=False", "--config.val_dir=", *options]
  one = run_tool("train", *common, f"--workdir={tmp_path / 'one'}", "--batch_size=8",
                 "--strategy=one_device")
  # The mirrored run with XLA (forward and backward compiled per replica, the
  # all-reduce and update outside), the one-device run without.
  two = run_tool("train", *common, f"--workdir={tmp_path / 'two'}", "--batch_size=4",
                 "--strategy=mirrored", "--cpu_replicas=2", "--config.jit_compile=True")
  assert "global batch 8 = 8 x 1 replica(s)" in one.stdout
  assert "global batch 8 = 4 x 2 replica(s)" in two.stdout
  assert "XLA on (--config.jit_compile)" in two.stdout and "warning" not in two.stdout
  loss_one = tensorboard_scalars(str(tmp_path / "one"))
  loss_two = tensorboard_scalars(str(tmp_path / "two"))
  assert sorted(loss_one) == sorted(loss_two) == list(range(1, STEPS + 1))
  # Step 1 sees identical weights, so only summation order differs: a wrong
  # per-replica loss scaling would be off by a factor of 2 there. Step 2 follows
  # one update: gradients summed twice or not averaged would move it by about
  # 1%. Later steps compound float rounding through training (seen: 6e-4
  # relative at step 5 on a loaded machine), so they are compared at 1e-2.
  assert loss_two[1] == pytest.approx(loss_one[1], rel=1e-4)
  assert loss_two[2] == pytest.approx(loss_one[2], rel=1e-3)
  for step in loss_one:
    assert loss_two[step] == pytest.approx(loss_one[step], rel=1e-2), step
  # It trained: the weight-decay term (wd/2 ||w||^2, logged every step) moved.
  decay = tensorboard_scalars(str(tmp_path / "one"), "train/weight_decay")
  assert abs(decay[STEPS] - decay[1]) > 1e-6 * decay[1], decay  # clipped: 5e-5 seen
  a = keras.saving.load_model(tmp_path / "one" / "backbone.keras")
  b = keras.saving.load_model(tmp_path / "two" / "backbone.keras")
  # The same drift reaches the weights, unevenly: a few elements of a channel
  # with a small batch variance moved 4% (unclipped), so the whole set is
  # compared by its norm (seen 3e-3 relative; a doubled update would be off by
  # the size of the updates themselves, which step 2's loss already catches).
  pairs = [(x.numpy(), y.numpy()) for x, y in zip(a.weights, b.weights)]
  assert [x.shape for x, _ in pairs] == [y.shape for _, y in pairs]
  diff = np.sqrt(sum(np.sum((x - y) ** 2) for x, y in pairs))
  norm = np.sqrt(sum(np.sum(x**2) for x, _ in pairs))
  assert diff < 1e-2 * norm, diff / norm



@pytest.mark.slow
def test_multi_worker_trains_identically_and_only_the_chief_writes(tmp_path):
  data = str(tmp_path / "data")
  training_data.labelled_dataset(data, num_classes=6, per_class=8, num_shards=4)
  workdir = tmp_path / "shared"
  outputs = run_worker_cluster(
      [sys.executable, str(TOOLS / "train.py"), "--dataset=synthetic", f"--data_dir={data}",
       f"--workdir={workdir}", "--total_steps=4", "--checkpoint_every=2",
       "--batch_size=4", "--strategy=multi_worker", "--config.log_every=1",
       "--config.verify_at_start=False", "--config.val_dir="])
  chief_out, other_out = outputs[0][0], outputs[1][0]
  assert "global batch 8 = 4 x 2 replica(s)" in chief_out
  assert re.search(r"^\[worker 1\] step 4/4 loss", other_out, re.M), other_out
  shas = [re.search(r"trainable weights sha256 ([0-9a-f]{64})", out).group(1)
          for out, _ in outputs]
  assert shas[0] == shas[1]  # the all-reduce kept the replicas identical
  assert len(glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*"))) == 1
  assert tf.train.latest_checkpoint(str(workdir / "ckpt")).endswith("ckpt-4")
  assert sorted(os.listdir(workdir)) == ["backbone.keras", "ckpt", "config.json",
                                         "tensorboard"]
