"""What IJB evaluation shows: InsightFace's TAR@FAR table and the ROC picture."""
import numpy as np

from tfface.evaluation import roc


def format_table(results):
  """The TAR@FAR table as InsightFace's `eval_ijbc.py` prints it (PrettyTable).

  One row per result, named `METHOD-TARGET`; TAR in percent, 2 decimals;
  columns headed by `str(far)`; cells centred as PrettyTable (and
  `str.center`) centre them.

  Args:
    results: an `IJBResult` or a list of them.

  Returns:
    The table, lines joined by newlines.
  """
  if not isinstance(results, (list, tuple)):
    results = [results]
  fars = list(results[0].tar_at_far)
  rows = [["Methods"] + [str(far) for far in fars]]
  for r in results:
    rows.append([f"{r.method}-{r.target}"] + [f"{r.tar_at_far[far] * 100:.2f}" for far in fars])
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
  line = lambda row: "|" + "|".join(f" {c.center(w)} " for c, w in zip(row, widths)) + "|"
  return "\n".join([rule, line(rows[0]), rule] + [line(r) for r in rows[1:]] + [rule])


def plot_roc(results, path):
  """Writes the ROC (TAR against FAR on a log axis) of one or more results as PNG.

  Args:
    results: an `IJBResult` or a list of them.
    path: the PNG file; written under a temporary name, then renamed.
  """
  if not isinstance(results, (list, tuple)):
    results = [results]
  with roc.png_figure(path, (6, 4.5), make_dirs=True) as (_, ax):
    lowest = 1.0
    for r in results:
      positive = r.fpr > 0  # a log axis cannot show FAR = 0
      lowest = min(lowest, r.fpr[positive].min())
      ax.plot(r.fpr[positive], r.tpr[positive], lw=1,
              label=f"[{r.method}-{r.target} (AUC = {r.auc * 100:.4f} %)]")
    fars = list(results[0].tar_at_far)
    ax.set_xscale("log")
    ax.set_xlim(min(min(fars), lowest), 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(fars + [1.0])
    ax.set_yticks(np.linspace(0.0, 1.0, 11))
    ax.grid(linestyle="--", linewidth=1, alpha=0.5)
    ax.set_xlabel("False Positive Rate (FAR)")
    ax.set_ylabel("True Positive Rate (TAR)")
    ax.set_title(f"ROC on {results[0].target}")
    ax.legend(loc="lower right", fontsize=8)
