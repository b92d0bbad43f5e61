"""The ROC and TAR@FAR exactly as InsightFace's `eval_ijbc.py` reads them.

InsightFace calls scikit-learn's `roc_curve(label, score)` (defaults: the
positive label 1, `drop_intermediate=True`), reverses `fpr` and `tpr`, and
for each target FAR takes the TAR of the point whose FPR is nearest, the
first such point in the reversed order on a tie. scikit-learn is not a
dependency of tfface, so `roc_curve` re-implements its semantics in numpy:

* one point per distinct score, from the highest: `tps` / `fps` count the
  genuine / impostor pairs scoring at least that score;
* `drop_intermediate`: a point is dropped when both its `fps` and `tps` have
  a zero second difference with its neighbours (it lies on the straight line
  between them); the first and last points always stay;
* a point (0, 0) with threshold +inf is prepended; the rates divide by the
  last counts.

Which points survive matters: "nearest FPR" picks among them.
"""
import numpy as np

# The FARs InsightFace's table reports; JSON keys are `str(far)`.
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def roc_curve(labels, scores, drop_intermediate=True):
  """scikit-learn's `roc_curve(labels, scores)` for 0/1 labels.

  Args:
    labels: [P] 0/1 (1 = genuine; any nonzero value counts as 1).
    scores: [P] similarity scores, higher = more alike.
    drop_intermediate: drop collinear points, as scikit-learn does by default.

  Returns:
    `(fpr, tpr, thresholds)`, float64, increasing rates and decreasing
    thresholds, starting at (0, 0, +inf).

  Raises:
    ValueError: mismatched lengths, non-finite scores, or labels that are all
      genuine or all impostor (the rates would be undefined).
  """
  labels = np.asarray(labels).reshape(-1) != 0
  scores = np.asarray(scores).reshape(-1)
  if len(labels) != len(scores):
    raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores contain NaN or infinity")
  num_genuine = int(labels.sum())
  if num_genuine in (0, len(labels)):
    raise ValueError(f"a ROC needs genuine and impostor pairs; got {num_genuine} genuine "
                     f"of {len(labels)}")
  # One point per distinct score, from the highest: `last_of_run` indexes
  # the last of each run of equal scores in descending order. The genuine
  # pairs scoring at least a threshold are counted by a binary search in the
  # (few) genuine scores: no argsort of all pairs (IJB-C: 15.6M) needed.
  descending = np.sort(scores)[::-1]
  last_of_run = np.r_[np.flatnonzero(np.diff(descending)), len(scores) - 1]
  thresholds = descending[last_of_run]
  genuine = np.sort(scores[labels])
  tps = (num_genuine - np.searchsorted(genuine, thresholds, side="left")).astype(np.float64)
  fps = 1.0 + last_of_run - tps
  thresholds = thresholds.astype(np.float64)
  if drop_intermediate and len(fps) > 2:
    corner = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
    keep = np.flatnonzero(np.r_[True, corner, True])
    fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
  fpr = np.r_[0.0, fps] / fps[-1]
  tpr = np.r_[0.0, tps] / tps[-1]
  return fpr, tpr, np.r_[np.inf, thresholds]


def tar_at_far(fpr, tpr, fars=FARS):
  """InsightFace's read-out: `{far: tpr of the point with the nearest fpr}`.

  Both curves are reversed first, and the first of equally near points in
  that order wins (Python's `min` over `(|fpr - far|, index)` in the
  reference; `np.argmin` returns the first minimum too).

  Args:
    fpr, tpr: a ROC from `roc_curve` (increasing).
    fars: target false accept rates.

  Returns:
    A dict `{far: tar}` of floats in [0, 1].
  """
  fpr = np.asarray(fpr, np.float64)[::-1]
  tpr = np.asarray(tpr, np.float64)[::-1]
  return {far: float(tpr[np.argmin(np.abs(fpr - far))]) for far in fars}


def auc(fpr, tpr):
  """Area under the ROC by the trapezoidal rule (scikit-learn's `auc`)."""
  fpr = np.asarray(fpr, np.float64)
  tpr = np.asarray(tpr, np.float64)
  return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
