"""Partial FC on 2 logical CPUs and on two workers, against the replicated head, numpy, resume.

Logical devices must be set before TensorFlow initializes, so each run is a
fresh tests/partial_fc_run.py process that dumps what it saw; the oracles
(the replicated MarginHead in the same run, a numpy softmax, a one-device
autodiff of the restricted softmax) are evaluated here.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_worker_cluster
from tfface import losses

SCRIPT = pathlib.Path(__file__).with_name("partial_fc_run.py")
S, M = 64.0, 0.5  # ArcFace, as the script runs it


def _run(out, *args, env=None, timeout=300):
  proc = subprocess.run([sys.executable, str(SCRIPT), f"--out={out}", *args],
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return np.load(os.path.join(out, "result.npz"), allow_pickle=True)["result"].item()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """One 2-replica run (compare, sample, save), then restores on 1 and 3 replicas."""
  root = tmp_path_factory.mktemp("partial_fc")
  ckpt = f"--ckpt_dir={root / 'ckpt'}"
  two = _run(root / "r2", "--mode=compare", "--replicas=2", ckpt)
  one = _run(root / "r1", "--mode=restore", "--replicas=1", ckpt)
  three = _run(root / "r3", "--mode=restore", "--replicas=3", ckpt)
  return {"two": two, "one": one, "three": three, "ckpt": root / "ckpt"}


def _assemble(shards):
  return np.concatenate([shards[r] for r in sorted(shards)])


def _check_matches_replicated(result):
  """PartialFC at 1.0 vs MarginHead + Keras SGD: the same losses and weights."""
  replicated, pfc = np.array(result["replicated_history"]), np.array(result["pfc_history"])
  # Step 1 trains without the margin (the warm-up), 2 and 3 with it.
  assert replicated[2, 0] < replicated[1, 0] * 0.95  # it trained
  np.testing.assert_allclose(pfc[:, 0], replicated[:, 0], rtol=1e-5)
  np.testing.assert_allclose(pfc[:, 1], replicated[:, 1], atol=1e-6)  # accuracy
  for a, b in zip(result["pfc_backbone"], result["replicated_backbone"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
  kernel = result["replicated_kernel"]
  tolerance = 1e-5 * np.abs(kernel).max()
  moved = 0.0
  for r, rows in result["pfc_shards"].items():
    start, stop = result["pfc_ranges"][r]
    np.testing.assert_allclose(rows, kernel[start:stop], rtol=1e-5, atol=tolerance)
    # Negative control: without the centres' weight decay the rows end
    # far outside that tolerance, so the comparison can see the decay.
    moved = max(moved, np.abs(result["nodecay_shards"][r] - kernel[start:stop]).max())
  assert moved > 30 * tolerance, (moved, tolerance)


def test_sample_rate_one_equals_the_replicated_head(runs):
  two = runs["two"]
  assert two["pfc_ranges"] == [(0, 6), (6, 11)]
  _check_matches_replicated(two)


def test_errors_name_the_problem_before_any_work(runs):
  errors = runs["two"]["errors"]
  assert "at least the 2 replicas in sync. Received: num_classes=1" in errors[0]
  assert "sample_rate must be in (0, 1]" in errors[1] and "sample_rate=0.0" in errors[1]
  assert "sample_rate=1.5" in errors[2]


def _numpy_arcface_loss(embeddings, centres, labels):
  """Independent reference: ArcFace logits over the given centres, mean softmax CE."""
  x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  w = centres / np.linalg.norm(centres, axis=1, keepdims=True)
  cosine = np.clip(x @ w.T, -1.0, 1.0)
  logits = S * cosine
  rows = np.arange(len(labels))
  target = cosine[rows, labels]
  margined = np.where(target > np.cos(np.pi - M), np.cos(np.arccos(target) + M),
                      target - np.sin(np.pi - M) * M)
  logits[rows, labels] = S * margined
  top = logits.max(axis=1, keepdims=True)
  lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
  accuracy = np.mean(np.argmax(S * cosine, axis=1) == labels)
  return np.mean(lse - logits[rows, labels]), accuracy


def test_sampled_step_equals_a_softmax_over_the_sampled_classes(runs):
  two = runs["two"]
  dump, samples = two["sampled_dump"], two["samples"]
  x, y = two["sampled_x"][1], two["sampled_y"][1]  # step 2's batch, [replica, b, ...]
  kernel_w, kernel_b = dump["fc"]
  embeddings = x.reshape(-1, x.shape[-1]).astype(np.float64) @ kernel_w + kernel_b
  labels = y.reshape(-1)
  ranges = [(0, 20), (20, 40)]
  sampled = []
  for r, (start, stop) in enumerate(ranges):
    indices, valid = samples[r]["indices"], samples[r]["valid"]
    positives = {c - start for c in labels if start <= c < stop}
    assert positives <= set(indices[valid])
    assert valid.sum() == max(two["num_sample"][r], len(positives)) == 10
    sampled.extend(indices[valid] + start)
  sampled = np.array(sorted(sampled))
  assert len(sampled) == 20 and set(labels) <= set(sampled)

  columns = np.searchsorted(sampled, labels)
  loss, accuracy = _numpy_arcface_loss(embeddings, dump["kernel"][sampled].astype(np.float64),
                                       columns)
  np.testing.assert_allclose(two["sampled_history"][1][0], loss, rtol=2e-5)
  assert two["sampled_history"][1][1] == pytest.approx(accuracy, abs=1e-6)
  # Negative control: the full 40-class softmax is another number.
  full, _ = _numpy_arcface_loss(embeddings, dump["kernel"].astype(np.float64), labels)
  assert abs(full - loss) > 1e-2 * loss

  # Gradients: zero on every unsampled row; on the sampled rows, those of a
  # one-device autodiff of the same restricted softmax.
  centres = tf.Variable(dump["kernel"][sampled])
  with tf.GradientTape() as tape:
    cosine = tf.matmul(tf.math.l2_normalize(tf.constant(embeddings, tf.float32), axis=1),
                       tf.math.l2_normalize(centres, axis=1), transpose_b=True)
    logits = losses.combined_margin_logits(cosine, columns, s=S, m2=M)
    reference_loss = tf.reduce_mean(losses.softmax_cross_entropy(columns, logits))
  expected = tape.gradient(reference_loss, centres).numpy()
  for r, (start, stop) in enumerate(ranges):
    grad = dump["grads"][r]
    mine = (sampled >= start) & (sampled < stop)
    unsampled = np.setdiff1d(np.arange(stop - start), sampled[mine] - start)
    assert len(unsampled) == 10 and not grad[unsampled].any()
    np.testing.assert_allclose(grad[sampled[mine] - start], expected[mine], rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("count", ["one", "three"])
def test_resume_on_another_replica_count_gives_the_same_centres(runs, count):
  two, restored = runs["two"], runs[count]
  assert restored["step"] == 2
  assert restored["ranges"] == {"one": [(0, 40)],
                                "three": [(0, 14), (14, 27), (27, 40)]}[count]
  assert set(restored["plain"]) == {"ResourceVariable"}  # not mirrored
  assert len(set(restored["devices"])) == len(restored["ranges"])  # one device per shard
  assert np.array_equal(restored["kernel"], two["saved_kernel"])
  assert np.array_equal(restored["momentum"], two["saved_momentum"])
  assert np.abs(two["saved_momentum"]).max() > 0  # momentum was really saved
  # ...and the centres moved from their initialization (else any restore passes).
  assert not np.allclose(two["saved_kernel"], two["sampled_dump"]["kernel"])



@pytest.mark.slow
def test_two_workers_equal_the_replicated_head(tmp_path):
  run_worker_cluster([sys.executable, str(SCRIPT), f"--out={tmp_path}", "--mode=compare"],
                     timeout=300)
  results = [np.load(tmp_path / f"worker{i}.npz", allow_pickle=True)["result"].item()
             for i in range(2)]
  for index, result in enumerate(results):
    assert list(result["pfc_shards"]) == [index]  # each worker holds its own shard only
    assert "read the full kernel from a checkpoint" in result["assemble_error"]
    _check_matches_replicated(result)
