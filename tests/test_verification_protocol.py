"""InsightFace's verification protocol: golden numbers, a loop oracle, the mxnet-era stack."""
import json
import subprocess

import cv2
import numpy as np
import pytest

from tfface.data.insightface import verification_bin
from tfface.evaluation import protocol
from tfface.evaluation import roc
from tfface.evaluation import verification as verify_lib

# InsightFace's algorithm written as plainly as the original: Python loops,
# one threshold at a time, consecutive folds standing in for KFold(shuffle=False)
# and np.interp over distinct FARs standing in for interp1d (see protocol.py).
# It only needs numpy, so the same text runs here (numpy 2) and in .venv-mxnet
# (numpy 1.23.5, the numeric stack InsightFace's numbers came from).
ORACLE = r'''
import numpy as np

def kfold(n, k):
  sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
  out, start = [], 0
  for s in sizes:
    test = list(range(start, start + s))
    train = [i for i in range(n) if i < start or i >= start + s]
    out.append((np.array(train), np.array(test)))
    start += s
  return out

def accuracy(threshold, dist, same):
  tp = fp = tn = fn = 0
  for d, s in zip(dist, same):
    p = d < threshold
    tp += p and s; fp += p and not s; tn += (not p) and (not s); fn += (not p) and s
  tpr = 0 if tp + fn == 0 else float(tp) / float(tp + fn)
  fpr = 0 if fp + tn == 0 else float(fp) / float(fp + tn)
  return tpr, fpr, float(tp + tn) / len(dist)

def val_far(threshold, dist, same):
  ta = sum(1 for d, s in zip(dist, same) if d < threshold and s)
  fa = sum(1 for d, s in zip(dist, same) if d < threshold and not s)
  n_same = sum(1 for s in same if s)
  n_diff = len(same) - n_same
  return float(ta) / n_same, float(fa) / n_diff

def evaluate(emb, same, folds=10):
  e1, e2 = emb[0::2], emb[1::2]
  dist = np.sum(np.square(np.subtract(e1, e2)), 1)
  thresholds = np.arange(0, 4, 0.01)
  accs, picked = [], []
  for train, test in kfold(len(dist), folds):
    train_acc = [accuracy(t, dist[train], same[train])[2] for t in thresholds]
    best = int(np.argmax(train_acc))
    picked.append(float(thresholds[best]))
    accs.append(accuracy(thresholds[best], dist[test], same[test])[2])
  thresholds = np.arange(0, 4, 0.001)
  vals, fars = [], []
  for train, test in kfold(len(dist), folds):
    far_train = np.array([val_far(t, dist[train], same[train])[1] for t in thresholds])
    if np.max(far_train) >= 1e-3:
      distinct, first = np.unique(far_train, return_index=True)
      threshold = float(np.interp(1e-3, distinct, thresholds[first]))
    else:
      threshold = 0.0
    v, f = val_far(threshold, dist[test], same[test])
    vals.append(v); fars.append(f)
  return {"accuracy": accs, "accuracy_mean": float(np.mean(accs)),
          "accuracy_std": float(np.std(accs)), "best_thresholds": picked,
          "val": float(np.mean(vals)), "val_std": float(np.std(vals)),
          "far": float(np.mean(fars))}
'''


def _oracle():
  namespace = {}
  exec(ORACLE, namespace)  # pylint: disable=exec-used
  return namespace["evaluate"]


def _unit(angle):
  return np.array([np.cos(angle), np.sin(angle)])


def _golden_embeddings():
  """20 pairs of 2-d unit vectors with distances 0, 0.8 or 2 (see the test)."""
  emb, same = [], []
  for i in range(20):
    emb.append(np.array([1.0, 0.0]))
    if i % 2 == 0:  # same identity: identical, or at distance 0.8
      emb.append(np.array([1.0, 0.0]) if i % 4 == 0 else np.array([0.6, 0.8]))
    else:  # different identities: orthogonal, except pair 19 (identical)
      emb.append(np.array([1.0, 0.0]) if i == 19 else np.array([0.0, 1.0]))
    same.append(i % 2 == 0)
  return np.stack(emb), np.array(same)


def test_golden_numbers_by_hand():
  emb, same = _golden_embeddings()
  m = protocol.evaluate_embeddings(emb, same)
  # Every training split is best served by the first grid threshold above 0.8;
  # only fold 9 (pairs 18, 19) loses pair 19, the identical impostor.
  np.testing.assert_allclose(m["best_thresholds"], [0.81] * 10)
  np.testing.assert_allclose(m["accuracy"], [1.0] * 9 + [0.5])
  assert m["accuracy_mean"] == pytest.approx(0.95, abs=1e-12)
  assert m["accuracy_std"] == pytest.approx(0.15, abs=1e-12)
  assert m["best_threshold"] == pytest.approx(0.81)
  # VAL: folds 0-8 train with the identical impostor, so FAR jumps 0 -> 1/9 at
  # the first threshold above 0; interpolating to 1e-3 accepts only distance 0:
  # held-out same pairs at distance 0 (even folds) pass, 0.8 (odd) fail. Fold 9
  # accepts below 0.002001, so its identical impostor is a false accept.
  assert m["val"] == pytest.approx(0.5, abs=1e-12)
  assert m["val_std"] == pytest.approx(0.5, abs=1e-12)
  assert m["far"] == pytest.approx(0.1, abs=1e-12)
  # Exact ROC: the five identical same pairs tie with the identical impostor.
  assert roc.tar_at_far(m["distances"], same, 1e-3) == 0.0
  assert roc.tar_at_far(m["distances"], same, 0.1) == 1.0


def _cosine_distance(a, b):
  """2 - 2 cos(a, b) per row: the squared distance of the normalized rows, computed apart."""
  cos = np.einsum("ij,ij->i", a, b) / np.sqrt(np.einsum("ij,ij->i", a, a) *
                                              np.einsum("ij,ij->i", b, b))
  return 2.0 - 2.0 * cos


def test_xnorm_and_flip_sum():
  # Raw embeddings of the images and of their mirrors: neither parallel nor of
  # one norm, so summing raw embeddings, summing normalized ones, averaging
  # distances or ignoring the mirror all give different distances.
  rng = np.random.default_rng(11)
  original = rng.normal(size=(40, 8)) * rng.uniform(1, 6, (40, 1))
  flipped = 0.6 * original + rng.normal(size=(40, 8)) * rng.uniform(1, 6, (40, 1))
  same = np.arange(20) % 2 == 0
  result = verify_lib.evaluate_flip_pairs(original, flipped, same, name="golden")
  summed = original + flipped
  expected = _cosine_distance(summed[0::2], summed[1::2])
  np.testing.assert_allclose(result.distances, expected, atol=1e-12)
  # The wrong recipes give clearly other distances on these inputs.
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  wrong = {
      "original only": _cosine_distance(original[0::2], original[1::2]),
      "normalized sum": _cosine_distance(*(unit(original) + unit(flipped)).reshape(
          20, 2, 8).transpose(1, 0, 2)),
      "mean distance": (_cosine_distance(original[0::2], original[1::2]) +
                        _cosine_distance(flipped[0::2], flipped[1::2])) / 2,
  }
  for name, distances in wrong.items():
    assert np.abs(distances - expected).max() > 0.05, name
  # The single-view form is the original alone; XNorm the mean raw norm of all 80.
  np.testing.assert_allclose(result.single_view.distances, wrong["original only"],
                             atol=1e-12)
  norms = np.sqrt(np.sum(np.concatenate([original, flipped]) ** 2, axis=1))
  assert result.xnorm == pytest.approx(norms.sum() / 80, rel=1e-12)
  assert result.accuracy_flip_mean == pytest.approx(
      protocol.evaluate_embeddings(unit(summed), same)["accuracy_mean"], abs=1e-12)
  d = result.as_dict()
  for key in ("accuracy_flip_mean", "accuracy_flip_std", "xnorm", "best_threshold",
              "threshold_accuracy", "val_far_1e-3", "val_std", "far", "tar_far_1e-3",
              "tar_far_1e-4", "num_pairs", "single_view"):
    assert key in d
  assert d["num_pairs"] == 20
  assert d["single_view"]["threshold"] == result.single_view.threshold
  json.dumps(d)


def test_best_threshold_accuracy_on_all_pairs():
  emb, same = _golden_embeddings()
  m = protocol.evaluate_accuracy(emb, same)
  # At 0.81 every pair is right but the identical impostor (pair 19): 19/20.
  assert m["best_threshold"] == pytest.approx(0.81)
  assert m["best_threshold_accuracy"] == pytest.approx(0.95, abs=1e-12)


def _random_pairs(num_pairs, dim=16, seed=0):
  """Noisy pairs: same pairs share a centre, so accuracy is neither 0.5 nor 1."""
  rng = np.random.default_rng(seed)
  same = rng.random(num_pairs) < 0.5
  # The reference divides by zero on a fold without both kinds of pair.
  for start, _ in protocol.fold_bounds(num_pairs, 10):
    same[start:start + 2] = (True, False)
  a = rng.normal(size=(num_pairs, dim))
  b = np.where(same[:, None], a, rng.normal(size=(num_pairs, dim)))
  emb = np.empty((2 * num_pairs, dim))
  emb[0::2] = a + 0.9 * rng.normal(size=a.shape)
  emb[1::2] = b + 0.9 * rng.normal(size=b.shape)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  return emb, same


@pytest.mark.parametrize("num_pairs", [20, 101])
def test_matches_loop_oracle(num_pairs):
  emb, same = _random_pairs(num_pairs, seed=num_pairs)
  ours = protocol.evaluate_embeddings(emb, same)
  ref = _oracle()(emb, same)
  np.testing.assert_allclose(ours["accuracy"], ref["accuracy"], atol=1e-6)
  np.testing.assert_allclose(ours["best_thresholds"], ref["best_thresholds"], atol=1e-9)
  for key in ("accuracy_mean", "accuracy_std", "val", "val_std", "far"):
    assert ours[key] == pytest.approx(ref[key], abs=1e-6), key
  assert 0.55 < ours["accuracy_mean"] < 0.99  # a case that exercises the search


def test_fold_without_same_pairs_counts_val_zero():
  # Where the reference would divide by zero (documented deviation).
  emb, same = _golden_embeddings()
  same[18] = False  # fold 9 now holds two impostor pairs
  m = protocol.evaluate_embeddings(emb, same)
  # Folds 0-8 as in the golden case; fold 9 has no same pair: VAL 0, and one
  # of its two impostors (the identical one) is accepted: FAR 1/2.
  assert m["val"] == pytest.approx(0.5, abs=1e-12)
  assert m["far"] == pytest.approx(0.05, abs=1e-12)


def test_fold_sizes_match_kfold():
  # KFold(n_splits=10) on 97 items: seven folds of 10, then three of 9.
  bounds = protocol.fold_bounds(97, 10)
  assert [e - s for s, e in bounds] == [10] * 7 + [9] * 3
  assert bounds[0] == (0, 10) and bounds[-1] == (88, 97)
  with pytest.raises(ValueError, match="9 pairs into 10 folds"):
    protocol.fold_bounds(9, 10)


def _write_test_bin(path, rng):
  """A .bin of 24 JPEG pairs, written as InsightFace does (cv2 from BGR); two are 100x100."""
  images = []
  for i in range(48):
    size = 100 if i in (3, 10) else 112
    img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (7, 7), 0)
    images.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
  verification_bin.write_bin(str(path), images, [i % 2 == 0 for i in range(24)], protocol=2)


# Runs in .venv-mxnet: decodes the .bin with mx.image.imdecode (+ resize_short,
# as InsightFace's load_bin does) and evaluates the embeddings with ORACLE.
MXNET_SCRIPT = ORACLE + r'''
import json, pickle, sys
import mxnet as mx
bin_path, emb_path, same_path, out_dir = sys.argv[1:5]
with open(bin_path, "rb") as f:
  bins, issame = pickle.load(f, encoding="bytes")
decoded = []
for b in bins:
  img = mx.image.imdecode(b)
  if img.shape[1] != 112:
    img = mx.image.resize_short(img, 112)
  decoded.append(img.asnumpy())
np.save(out_dir + "/mx_images.npy", np.stack(decoded))
emb, same = np.load(emb_path), np.load(same_path)
json.dump({"numpy": np.__version__, **evaluate(emb, same)}, open(out_dir + "/mx.json", "w"))
'''


@pytest.mark.mxnet
def test_matches_mxnet_era_stack(mxnet_python, tmp_path):
  rng = np.random.default_rng(7)
  bin_path = tmp_path / "pairs.bin"
  _write_test_bin(bin_path, rng)
  emb, same = _random_pairs(250, seed=3)
  np.save(tmp_path / "emb.npy", emb)
  np.save(tmp_path / "same.npy", same)
  script = tmp_path / "mx_reference.py"
  script.write_text(MXNET_SCRIPT)
  subprocess.run([mxnet_python, str(script), str(bin_path), str(tmp_path / "emb.npy"),
                  str(tmp_path / "same.npy"), str(tmp_path)], check=True, timeout=300,
                 capture_output=True)
  ref = json.loads((tmp_path / "mx.json").read_text())
  assert ref["numpy"] == "1.23.5"
  ours = protocol.evaluate_embeddings(emb, same)
  np.testing.assert_allclose(ours["accuracy"], ref["accuracy"], atol=1e-6)
  for key in ("accuracy_mean", "accuracy_std", "val", "val_std", "far"):
    assert ours[key] == pytest.approx(ref[key], abs=1e-6), key

  # Decoding: RGB like mx.image.imdecode, and the resized images close to
  # mx's resize_short (a different OpenCV build, so allow rounding).
  mx_images = np.load(tmp_path / "mx_images.npy")
  vbin = verification_bin.load_bin(str(bin_path))
  images = verify_lib.decode_bin_images(vbin, (112, 112))
  same_size = [i for i in range(48) if i not in (3, 10)]
  diff = np.abs(images.astype(int) - mx_images.astype(int))
  assert diff[same_size].max() <= 1
  assert diff[[3, 10]].mean() < 1.0
