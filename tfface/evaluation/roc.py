"""ROC curves, TAR@FAR, the ROC picture and the results table of `tools/verify.py`.

The protocol's own ROC (`protocol.calculate_roc`) lives on a 0.01 threshold
grid averaged over folds, too coarse to read TAR at FAR=1e-4. Here the ROC is
exact: one point per distinct pair distance over all pairs.
"""
import contextlib

import numpy as np

from tfface import atomic

TAR_FARS = (1e-3, 1e-4)


def exact_roc(distances, issame):
  """The ROC of "same when distance <= d" for every distinct distance d.

  Args:
    distances: [N] pair distances (smaller = more alike).
    issame: [N] bools.

  Returns:
    `(fpr, tpr, thresholds)`, each starting at the point (0, 0) where nothing
    is accepted; `thresholds[i]` is the largest accepted distance.
  """
  distances = np.asarray(distances, dtype=np.float64)
  issame = np.asarray(issame, dtype=bool)
  order = np.argsort(distances, kind="mergesort")
  dist_sorted = distances[order]
  same_sorted = issame[order]
  tp = np.cumsum(same_sorted)
  fp = np.cumsum(~same_sorted)
  # Only cut between distinct distances: tied pairs are accepted together.
  last_of_run = np.r_[dist_sorted[1:] != dist_sorted[:-1], True]
  n_same = max(int(issame.sum()), 1)
  n_diff = max(int((~issame).sum()), 1)
  tpr = np.r_[0.0, tp[last_of_run] / n_same]
  fpr = np.r_[0.0, fp[last_of_run] / n_diff]
  thresholds = np.r_[-np.inf, dist_sorted[last_of_run]]
  return fpr, tpr, thresholds


def tar_at_far(distances, issame, far):
  """The highest TAR among operating points whose FAR does not exceed `far`."""
  fpr, tpr, _ = exact_roc(distances, issame)
  return float(tpr[fpr <= far].max())


@contextlib.contextmanager
def png_figure(path, figsize, make_dirs=False):
  """An Agg (headless) matplotlib `(figure, axes)`, saved to `path` when the block ends.

  The PNG is written under a temporary name and renamed; the figure is
  closed whatever happens. Both ROC pictures (verification and IJB) use it.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # no display on servers
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=figsize, dpi=100)
  try:
    yield fig, ax
    fig.tight_layout()
    with atomic.replacing(path, suffix=".png", make_dirs=make_dirs) as tmp:
      fig.savefig(tmp, format="png")
  finally:
    plt.close(fig)


def plot_roc(results, path):
  """Writes a PNG of the exact ROC of one or more verification results.

  Args:
    results: a `VerificationResult` or a list of them.
    path: output PNG file; written under a temporary name, then renamed.
  """
  if not isinstance(results, (list, tuple)):
    results = [results]
  with png_figure(path, (5, 4)) as (_, ax):
    for result in results:
      fpr, tpr, _ = exact_roc(result.distances, result.issame)
      # A log FAR axis cannot show FAR = 0; start it at one false accept.
      floor = 1.0 / max(int((~result.issame).sum()), 1)
      ax.step(np.maximum(fpr, floor), tpr, where="post",
              label=f"{result.name} (acc {result.accuracy_flip_mean:.4f})")
    ax.set_xscale("log")
    ax.set_xlabel("FAR (false accept rate)")
    ax.set_ylabel("TAR (true accept rate)")
    ax.set_ylim(0.0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("ROC")


def format_table(results):
  """The results table `tools/verify.py` prints, one row per target.

  `acc-flip`, `thresh`: InsightFace's flip-summed numbers; `acc-1view`,
  `thr-1v`: the same for single-view embeddings (an export without flip TTA).
  """
  header = (f"{'target':<14} {'pairs':>6} {'acc-flip':>9} {'+-std':>8} "
            f"{'xnorm':>9} {'thresh':>7} {'acc-1view':>9} {'thr-1v':>7} "
            f"{'VAL@1e-3':>9} {'TAR@1e-3':>9} {'TAR@1e-4':>9}")
  lines = [header, "-" * len(header)]
  for r in results:
    lines.append(
        f"{r.name:<14} {r.num_pairs:>6d} {r.accuracy_flip_mean:>9.5f} "
        f"{r.accuracy_flip_std:>8.5f} {r.xnorm:>9.4f} {r.best_threshold:>7.2f} "
        f"{r.single_view.accuracy_mean:>9.5f} {r.single_view.threshold:>7.2f} "
        f"{r.val:>9.5f} {r.tar_far_1e3:>9.5f} {r.tar_far_1e4:>9.5f}")
  return "\n".join(lines)
