"""`tools/verify.py`'s job: one model, several `.bin` targets, a table, JSON, ROC."""
import os
import pickle
import time

import numpy as np

from tfface import atomic
from tfface.data.insightface import verification_bin
from tfface.evaluation import roc
from tfface.evaluation import verification
from tfface.inference import loading


def stored_threshold_check(model, result):
  """How the threshold stored with `model` does on `result`'s pairs, or None.

  The threshold is applied to the embedding form it was measured on (for an
  export: the form `serving_default` serves), as a client would.

  Returns:
    `{"threshold", "embedding", "accuracy"}`, or None when the model stores
    no threshold.
  """
  if model.metadata.get("threshold") is None:
    return None
  point = result.operating_point(model.threshold_embedding)
  accuracy = float(np.mean((point.distances < model.threshold) == result.issame))
  return {"threshold": model.threshold, "embedding": point.embedding,
          "accuracy": accuracy}


def verify_model(model_path, bin_paths, batch_size=64, output_json=None,
                 roc_dir=None, echo=print, verbose=True):
  """Verifies a model on InsightFace `.bin` targets and reports the results.

  Args:
    model_path: SavedModel export, TF Serving model base, training workdir or
      `.keras` file.
    bin_paths: list of `.bin` files; each target is named by the file's stem.
    batch_size: images per forward pass.
    output_json: optional path for `{stem: result.as_dict()}` (plus
      `stored_threshold` when the model stores one).
    roc_dir: optional directory for one `STEM_roc.png` per target.
    echo: called with each line to show the user (the table at the end).
    verbose: show decoding and embedding progress on stderr.

  Returns:
    The list of `VerificationResult`, in the order of `bin_paths`.

  Raises:
    ValueError: two targets share a stem, a file or the model is unusable, a
      `.bin` has fewer pairs than the protocol's folds, or an output path
      cannot be written.
    OSError: a file cannot be read.
  """
  stems = [os.path.splitext(os.path.basename(p))[0] for p in bin_paths]
  duplicates = sorted({s for s in stems if stems.count(s) > 1})
  if duplicates:
    raise ValueError(f"targets are keyed by file stem, and {duplicates} appear "
                     "more than once in --bins")
  # Outputs and every .bin are checked before the (slow) model load and the
  # evaluation, so a typo fails fast.
  if output_json:
    atomic.check_output_file(output_json, "--output_json")
  if roc_dir:
    atomic.check_output_directory(roc_dir, "--roc_dir", [f"{s}_roc.png" for s in stems])
  try:
    bins = [verification_bin.load_bin(p) for p in bin_paths]
  except pickle.UnpicklingError as e:  # the restricted unpickler's refusal
    raise ValueError(str(e)) from e
  for vbin in bins:
    verification.check_foldable(vbin)
  model = loading.load_embedding_model(model_path)
  results, summaries = [], {}
  for vbin in bins:
    start = time.time()
    result = verification.verify(model, vbin, batch_size=batch_size, verbose=verbose)
    echo(f"[{result.name}] Accuracy-Flip: {result.accuracy_flip_mean:.5f}+-"
         f"{result.accuracy_flip_std:.5f}  XNorm: {result.xnorm:.4f}  "
         f"({time.time() - start:.1f} s)")
    summary = result.as_dict()
    check = stored_threshold_check(model, result)
    if check is not None:
      echo(f"[{result.name}] stored threshold {check['threshold']:.2f} on "
           f"{check['embedding']} embeddings: accuracy {check['accuracy']:.5f}")
      summary["stored_threshold"] = check
    results.append(result)
    summaries[result.name] = summary
    if roc_dir:
      os.makedirs(roc_dir, exist_ok=True)
      roc.plot_roc(result, os.path.join(roc_dir, f"{result.name}_roc.png"))
  if output_json:
    atomic.write_json(output_json, summaries, indent=2, make_dirs=True)
  echo(roc.format_table(results))
  return results
