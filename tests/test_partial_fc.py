"""Partial FC pieces that need no logical devices: sharding, sampling, initializer, files.

The distributed step itself (2 logical CPUs, two workers) is tested in
test_partial_fc_distributed.py.
"""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface.models import MarginHead
from tfface.models import RowBlockNormal
from tfface.training import partial_fc
from tfface.training.partial_fc import checkpoint
from tfface.training.partial_fc import sampling
from tfface.training.partial_fc import sharding


def test_shard_ranges_split_like_arcface_torch_and_refuse_too_few_classes():
  assert sharding.shard_ranges(11, 2) == [(0, 6), (6, 11)]
  assert sharding.shard_ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
  assert sharding.shard_ranges(3, 3) == [(0, 1), (1, 2), (2, 3)]
  sizes = [b - a for a, b in sharding.shard_ranges(2_059_906, 8)]
  assert sizes == [257_489] * 2 + [257_488] * 6  # n_r = C // R + (r < C % R)
  with pytest.raises(ValueError, match="at least the 4 replicas.*num_classes=3"):
    sharding.shard_ranges(3, 4)
  for rate in (0.0, -0.1, 1.01, float("nan")):
    with pytest.raises(ValueError, match=r"sample_rate must be in \(0, 1\]"):
      sharding.check_sample_rate(rate)
  assert sharding.num_sampled(0.1, 257_489) == 25_749  # round(25748.9)
  assert sharding.num_sampled(1.0, 20) == 20 and sharding.num_sampled(0.01, 20) == 1


def test_errors_are_raised_at_construction():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with pytest.raises(ValueError, match=r"Received: sample_rate=0"):
    partial_fc.PartialFC(strategy, 10, 4, sample_rate=0)
  with pytest.raises(ValueError, match=r"Received: sample_rate=2"):
    partial_fc.PartialFC(strategy, 10, 4, sample_rate=2)
  with pytest.raises(ValueError, match="num_classes=0"):
    partial_fc.PartialFC(strategy, 0, 4)
  with pytest.raises(ValueError, match="rows"):
    partial_fc.PartialFC(strategy, 10, 4, initializer=keras.initializers.RandomNormal())


def _local_labels(labels, start, stop):
  labels = np.asarray(labels)
  return np.where((labels >= start) & (labels < stop), labels - start, -1).astype("int32")


@pytest.mark.parametrize("labels, num_sample, expected_count", [
    ([3, 3, 17, 25, 40, 2, 9, 9], 10, 10),          # positives 2, 3, 9, 17: 6 negatives
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 4, 12),  # 12 positives exceed 4
    ([30, 31, -1, 45, 50, 60, 70, 80], 3, 3),       # none owned: negatives only
])
def test_sample_keeps_every_positive_and_counts_as_specified(labels, num_sample,
                                                             expected_count):
  num_local = 30
  local = _local_labels(labels, 0, num_local)
  seed = sampling.step_seed(1, 5, 0)
  sample = sampling.sample_classes(local, num_local, num_sample, seed)
  indices, valid, columns = (t.numpy() for t in sample)
  assert len(indices) == sampling.sample_slots(num_local, num_sample, len(labels))
  assert len(set(indices)) == len(indices)  # distinct centres
  used = indices[valid]
  assert valid.sum() == expected_count and valid[:expected_count].all()
  positives = set(local[local >= 0])
  assert positives <= set(used)
  for label, column in zip(local, columns):  # each example finds its centre
    assert column == -1 if label < 0 else indices[column] == label
  # Deterministic in (seed, step, replica); other negatives at another step
  # or on another replica.
  again = sampling.sample_classes(local, num_local, num_sample, seed)
  assert np.array_equal(again.indices.numpy(), indices)
  for other_seed in (sampling.step_seed(1, 6, 0), sampling.step_seed(1, 5, 1)):
    other = sampling.sample_classes(local, num_local, num_sample, other_seed)
    changed = set(other.indices.numpy()[valid]) != set(used)
    assert changed == (expected_count > len(positives))


def test_negatives_are_uniform():
  # 400 draws of 5 negatives out of 19 (class 0 is the positive): each
  # negative is expected 400 * 5 / 19 = 105 times (binomial sd 9).
  counts = np.zeros(20)
  local = np.array([0, -1], "int32")
  for step in range(400):
    sample = sampling.sample_classes(local, 20, 6, sampling.step_seed(0, step, 0))
    counts[sample.indices.numpy()[sample.valid.numpy()]] += 1
  assert counts[0] == 400
  assert np.abs(counts[1:] - 400 * 5 / 19).max() < 40, counts


def test_row_block_normal_rows_equal_the_full_matrix():
  init = RowBlockNormal(stddev=0.5, seed=3, block_rows=7)
  full = init((50, 6)).numpy()
  assert full.dtype == np.float32 and abs(full.std() - 0.5) < 0.06
  for start, stop in [(0, 50), (3, 17), (7, 14), (13, 14), (49, 50), (10, 10)]:
    assert np.array_equal(init.rows(start, stop, 6).numpy(), full[start:stop])
  # Rows do not depend on the matrix's height; the seed and blocking matter.
  assert np.array_equal(init((20, 6)).numpy(), full[:20])
  assert not np.allclose(RowBlockNormal(0.5, seed=4, block_rows=7)((50, 6)), full)
  assert not np.allclose(RowBlockNormal(0.5, seed=3, block_rows=8)((50, 6)), full)
  with pytest.raises(ValueError, match="start=5, stop=4"):
    init.rows(5, 4, 6)


def test_row_block_normal_serializes_and_initializes_margin_head(tmp_path):
  init = RowBlockNormal(stddev=0.02, seed=9, block_rows=16)
  clone = keras.initializers.deserialize(keras.initializers.serialize(init))
  assert isinstance(clone, RowBlockNormal) and clone.get_config() == init.get_config()
  head = MarginHead(40, embedding_size=8, kernel_initializer=init)
  assert np.array_equal(head.kernel.numpy(), init.rows(0, 40, 8).numpy())
  model = keras.Sequential([keras.Input((8,)), head])
  model.save(tmp_path / "head.keras")
  loaded = keras.saving.load_model(tmp_path / "head.keras")
  assert loaded.layers[-1].kernel_initializer.get_config() == init.get_config()


def test_update_is_keras_momentum_sgd_with_coupled_decay_on_every_row():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  pfc = partial_fc.PartialFC(strategy, 6, 3, sample_rate=0.5, momentum=0.9,
                             weight_decay=0.1, initializer=RowBlockNormal(0.5, seed=1))
  rng = np.random.default_rng(0)
  w0 = pfc.assemble_kernel()
  m0 = rng.normal(size=(6, 3)).astype("float32")
  pfc.shards[0].momentum.assign(m0)
  values = rng.normal(size=(3, 3)).astype("float32")
  indices = np.array([4, 1, 4])  # a repeated row adds up, as IndexedSlices do

  @tf.function
  def update(learning_rate, apply_if, dense):
    def replica_fn():
      grad = tf.IndexedSlices(tf.constant(values), tf.constant(indices), (6, 3))
      pfc.apply_gradients(tf.convert_to_tensor(grad) if dense else grad, learning_rate,
                          apply_if)
    strategy.run(replica_fn)

  update(0.3, tf.constant(False), False)  # a skipped step changes nothing
  assert np.array_equal(pfc.assemble_kernel(), w0)
  assert np.array_equal(pfc.shards[0].momentum.numpy(), m0)

  grad = np.zeros((6, 3))
  np.add.at(grad, indices, values)
  w, m = w0.astype(np.float64), m0.astype(np.float64)
  for learning_rate, dense in ((0.3, False), (0.05, True)):
    update(learning_rate, tf.constant(True), dense)
    m = 0.9 * m - learning_rate * (grad + 0.1 * w)  # rows 0, 2, 3, 5: decay only
    w = w + m
    np.testing.assert_allclose(pfc.shards[0].momentum.numpy(), m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pfc.assemble_kernel(), w, rtol=1e-5, atol=1e-6)


def _one_device_pfc(num_classes=9, dim=4):
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  return partial_fc.PartialFC(strategy, num_classes, dim, sample_rate=0.5,
                              initializer=RowBlockNormal(0.1, seed=2, block_rows=4))


def test_checkpoint_files_completeness_prune_and_mismatch(tmp_path):
  ckpt = str(tmp_path / "ckpt")
  pfc = _one_device_pfc()
  shard = pfc.shards[0]
  assert not isinstance(shard.kernel, tf.distribute.DistributedValues)
  assert pfc.head_memory_bytes() == 2 * 9 * 4 * 4
  assert [id(v) for v in pfc.variables] == [id(shard.kernel), id(shard.momentum)]
  kernel = pfc.assemble_kernel()
  assert np.array_equal(kernel, RowBlockNormal(0.1, seed=2, block_rows=4)((9, 4)))
  shard.momentum.assign(np.full((9, 4), 0.25, "float32"))
  for step in (10, 20, 30):
    pfc.save(ckpt, step)
  assert partial_fc.latest_complete_step(ckpt) == 30
  assert np.array_equal(partial_fc.read_kernel(ckpt), kernel)

  # A shard whose JSON is missing (killed mid-save) makes the step incomplete.
  os.remove(os.path.join(ckpt, "partial_fc-30", "shard-00000-of-00001.json"))
  assert partial_fc.latest_complete_step(ckpt) == 20
  # Files of another sharding in the same step are dropped when it is saved again.
  checkpoint.write_shard(ckpt, 30, 0, 2, (0, 5), 9, kernel[:5], kernel[:5])
  pfc.save(ckpt, 30)
  assert sorted(os.listdir(os.path.join(ckpt, "partial_fc-30"))) == [
      "shard-00000-of-00001-kernel.npy", "shard-00000-of-00001-momentum.npy",
      "shard-00000-of-00001.json"]

  other = _one_device_pfc()
  other.set_kernel(np.zeros((9, 4), "float32"))
  assert "step 20 from 1 shard(s) into 1" in other.restore(ckpt, 20)
  assert np.array_equal(other.assemble_kernel(), kernel)
  assert np.array_equal(other.shards[0].momentum.numpy(), np.full((9, 4), 0.25))

  with pytest.raises(ValueError, match=r"partial_fc-20: Partial FC shards hold 9 classes "
                                       r"x 4 features, this run has 10 x 4"):
    _one_device_pfc(num_classes=10).restore(ckpt, 20)
  with pytest.raises(ValueError, match="partial_fc-40: no complete set"):
    other.restore(ckpt, 40)
  with open(os.path.join(ckpt, "partial_fc-20", "shard-00000-of-00001.json")) as f:
    assert json.load(f)["num_classes"] == 9

  assert partial_fc.prune(ckpt, [20, 30]) == [10]
  assert partial_fc.prune(ckpt, [20]) == []  # never a step newer than the kept ones
  assert sorted(os.listdir(ckpt)) == ["partial_fc-20", "partial_fc-30"]
