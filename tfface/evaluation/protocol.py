"""InsightFace's verification protocol on precomputed embeddings (pure numpy).

This reproduces the numbers of InsightFace's `verification.py` (`evaluate`,
`calculate_roc`, `calculate_val`) on the same embeddings:

* pairs are consecutive rows: pair i is `embeddings[2i]`, `embeddings[2i + 1]`;
* distance is the squared Euclidean distance of L2-normalized embeddings;
  a pair is called "same" when `distance < threshold`;
* 10 folds over the pairs in file order, without shuffling (scikit-learn's
  `KFold(shuffle=False)`: the first `n % k` folds hold one extra pair);
* per fold, the threshold from `0, 0.01, ..., 3.99` with the best accuracy on
  the other nine folds (ties go to the smallest), accuracy on the held-out fold;
* VAL@FAR: thresholds `0, 0.001, ..., 3.999`; per fold the threshold where the
  training folds' FAR reaches the target, found by linear interpolation of
  threshold against FAR; VAL and FAR of that threshold on the held-out fold.

Two deliberate deviations, both where the reference cannot run at all:

* The reference calls `scipy.interpolate.interp1d(far, thresholds, "slinear")`
  on a FAR curve full of repeated values, which current SciPy rejects. We
  interpolate over the distinct FAR values, each paired with the smallest
  threshold that reaches it (`np.unique(..., return_index=True)`). On the
  reference's side of every FAR step this is the threshold where the step
  begins, so the training FAR at the chosen threshold never exceeds the target.
* A held-out fold without "same" (or without "different") pairs makes the
  reference divide by zero; we count its VAL (or FAR) as 0, the convention the
  reference already uses for TPR and FPR.
"""
import numpy as np

# The reference builds its grids with np.arange; comparisons with the same
# float values are what make the numbers match bit for bit.
ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
FAR_TARGET = 1e-3
# InsightFace's folds; every fold needs a pair, so a target needs this many.
NROF_FOLDS = 10


def fold_bounds(num_pairs, nrof_folds):
  """Start/end indices of the consecutive folds scikit-learn's KFold makes.

  Args:
    num_pairs: number of pairs.
    nrof_folds: number of folds (at least 2).

  Returns:
    A list of `(start, end)` tuples, one per fold.

  Raises:
    ValueError: fewer pairs than folds, or fewer than two folds.
  """
  if nrof_folds < 2:
    raise ValueError(f"nrof_folds must be at least 2, got {nrof_folds}")
  if num_pairs < nrof_folds:
    raise ValueError(f"cannot split {num_pairs} pairs into {nrof_folds} folds; "
                     "a verification set needs at least one pair per fold")
  sizes = np.full(nrof_folds, num_pairs // nrof_folds)
  sizes[:num_pairs % nrof_folds] += 1
  ends = np.cumsum(sizes)
  return [(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def pair_distances(embeddings):
  """Squared Euclidean distance of each consecutive pair of rows, as float64."""
  embeddings = np.asarray(embeddings, dtype=np.float64)
  if embeddings.ndim != 2 or embeddings.shape[0] % 2:
    raise ValueError("embeddings must be [2N, D] with pairs on consecutive rows, "
                     f"got shape {embeddings.shape}")
  diff = embeddings[0::2] - embeddings[1::2]
  return np.sum(np.square(diff), axis=1)


def _confusion_per_fold(dist, issame, thresholds, bounds):
  """Counts tp, fp, tn, fn per (fold, threshold), each of shape [folds, T]."""
  predict = dist[None, :] < thresholds[:, None]  # [T, N]
  starts = [s for s, _ in bounds]
  # Folds are contiguous, so one reduceat per count sums each fold's columns.
  tp = np.add.reduceat(predict & issame, starts, axis=1, dtype=np.int64).T
  fp = np.add.reduceat(predict & ~issame, starts, axis=1, dtype=np.int64).T
  n_same = np.add.reduceat(issame.astype(np.int64), starts)
  n_diff = np.add.reduceat((~issame).astype(np.int64), starts)
  fn = n_same[:, None] - tp
  tn = n_diff[:, None] - fp
  return tp, fp, tn, fn


def _safe_ratio(num, den):
  """num / den as float64, 0 where den is 0 (the reference's TPR/FPR rule)."""
  num = np.asarray(num, dtype=np.float64)
  den = np.asarray(den, dtype=np.float64)
  return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def calculate_roc(dist, issame, bounds, thresholds=ACCURACY_THRESHOLDS):
  """Cross-validated accuracy and fold-mean ROC on a threshold grid.

  Args:
    dist: [N] pair distances.
    issame: [N] bools.
    bounds: folds as returned by `fold_bounds`.
    thresholds: the grid searched for the best threshold.

  Returns:
    `(tpr, fpr, accuracy, best_thresholds)`: TPR and FPR per threshold averaged
    over the held-out folds, the held-out accuracy of each fold and the
    threshold each fold chose on its training folds.
  """
  tp, fp, tn, fn = _confusion_per_fold(dist, issame, thresholds, bounds)
  sizes = np.array([e - s for s, e in bounds])
  correct = tp + tn
  train_acc = (correct.sum(0)[None, :] - correct) / (len(dist) - sizes)[:, None]
  best = np.argmax(train_acc, axis=1)  # first maximum = smallest threshold
  folds = np.arange(len(bounds))
  accuracy = correct[folds, best] / sizes
  tprs = _safe_ratio(tp, tp + fn)
  fprs = _safe_ratio(fp, fp + tn)
  return tprs.mean(0), fprs.mean(0), accuracy, thresholds[best]


def calculate_val(dist, issame, bounds, far_target=FAR_TARGET,
                  thresholds=VAL_THRESHOLDS):
  """VAL (TAR) at a FAR target, cross-validated as InsightFace does.

  Args:
    dist: [N] pair distances.
    issame: [N] bools.
    bounds: folds as returned by `fold_bounds`.
    far_target: the false accept rate the training folds are tuned to.
    thresholds: the grid the FAR curve is sampled on.

  Returns:
    `(val_mean, val_std, far_mean)` over the held-out folds.
  """
  tp, fp, _, _ = _confusion_per_fold(dist, issame, thresholds, bounds)
  n_same = np.add.reduceat(issame.astype(np.int64), [s for s, _ in bounds])
  n_diff = np.add.reduceat((~issame).astype(np.int64), [s for s, _ in bounds])
  val = np.zeros(len(bounds))
  far = np.zeros(len(bounds))
  for k, (start, end) in enumerate(bounds):
    far_train = _safe_ratio(fp.sum(0) - fp[k], n_diff.sum() - n_diff[k])
    if far_train.max() >= far_target:
      far_values, first = np.unique(far_train, return_index=True)
      threshold = float(np.interp(far_target, far_values, thresholds[first]))
    else:
      threshold = 0.0
    predict = dist[start:end] < threshold
    same = issame[start:end]
    val[k] = _safe_ratio(np.sum(predict & same), n_same[k])
    far[k] = _safe_ratio(np.sum(predict & ~same), n_diff[k])
  return float(np.mean(val)), float(np.std(val)), float(np.mean(far))


def best_overall_threshold(dist, issame, thresholds=ACCURACY_THRESHOLDS):
  """The grid threshold with the best accuracy on all pairs, and that accuracy.

  This is the operating point stored with an export and used by
  `tools/compare.py`: the folds' thresholds estimate the same quantity with
  held-out data, but a deployed model needs one number.

  Returns:
    `(threshold, accuracy)`; ties go to the smallest threshold.
  """
  predict = dist[None, :] < thresholds[:, None]
  correct = np.sum(predict == issame[None, :], axis=1)
  best = int(np.argmax(correct))
  return float(thresholds[best]), float(correct[best] / len(dist))


def evaluate_accuracy(embeddings, issame, nrof_folds=NROF_FOLDS):
  """The accuracy half of `evaluate_embeddings` (no VAL): cheaper, for thresholds.

  Args:
    embeddings: [2N, D] L2-normalized array; rows 2i and 2i + 1 form pair i.
    issame: [N] bools, True when pair i shows one identity.
    nrof_folds: number of consecutive cross-validation folds.

  Returns:
    A dict with `accuracy` (per fold), `accuracy_mean`, `accuracy_std`,
    `best_thresholds` (per fold), `best_threshold` (on all pairs),
    `best_threshold_accuracy` (its accuracy on all pairs), `tpr`, `fpr`
    (fold-mean ROC on the 0.01 grid), `thresholds` and `distances`.

  Raises:
    ValueError: shapes disagree or there are fewer pairs than folds.
  """
  dist = pair_distances(embeddings)
  issame = np.asarray(issame, dtype=bool).reshape(-1)
  if issame.shape[0] != dist.shape[0]:
    raise ValueError(f"{dist.shape[0]} embedding pairs but {issame.shape[0]} "
                     "issame labels")
  bounds = fold_bounds(len(dist), nrof_folds)
  tpr, fpr, accuracy, best_thresholds = calculate_roc(dist, issame, bounds)
  threshold, threshold_accuracy = best_overall_threshold(dist, issame)
  return {
      "accuracy": accuracy,
      "accuracy_mean": float(np.mean(accuracy)),
      "accuracy_std": float(np.std(accuracy)),
      "best_thresholds": best_thresholds,
      "best_threshold": threshold,
      "best_threshold_accuracy": threshold_accuracy,
      "tpr": tpr,
      "fpr": fpr,
      "thresholds": ACCURACY_THRESHOLDS,
      "distances": dist,
  }


def evaluate_embeddings(embeddings, issame, nrof_folds=NROF_FOLDS):
  """InsightFace's `evaluate` on flip-summed, L2-normalized pair embeddings.

  Args:
    embeddings: [2N, D] array; rows 2i and 2i + 1 form pair i.
    issame: [N] bools, True when pair i shows one identity.
    nrof_folds: number of consecutive cross-validation folds.

  Returns:
    `evaluate_accuracy`'s dict plus `val`, `val_std` and `far` (VAL@FAR=1e-3
    and the achieved FAR).

  Raises:
    ValueError: shapes disagree or there are fewer pairs than folds.
  """
  metrics = evaluate_accuracy(embeddings, issame, nrof_folds)
  dist = metrics["distances"]
  issame = np.asarray(issame, dtype=bool).reshape(-1)
  val, val_std, far = calculate_val(dist, issame, fold_bounds(len(dist), nrof_folds))
  metrics.update({"val": val, "val_std": val_std, "far": far})
  return metrics
