"""`tools/eval_ijb.py`'s job: IJB-B / IJB-C 1:1 template verification of one model.

InsightFace's `recognition/arcface_torch/eval_ijbc.py`, step by step:
align every loose crop by its five landmarks, embed it (and its mirror
image), weight, pool per template, score the template pairs, read TAR at
FAR = 1e-6 ... 1e-1 off the ROC (`templates`, `tar_far`).
"""
import dataclasses
import logging
import os
import time

import numpy as np

from tfface import atomic
from tfface.data.insightface import ijb_meta
from tfface.evaluation.ijb import faces
from tfface.evaluation.ijb import report
from tfface.evaluation.ijb import tar_far
from tfface.evaluation.ijb import templates as templates_lib

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class IJBResult:
  """TAR@FAR of one model on one target, plus what the ROC picture needs.

  `flip_test`, `detector_score` and `norm_score` are InsightFace's test
  modes (F, D, N); all True is the mode its published numbers use.
  """

  target: str
  method: str
  num_images: int
  num_templates: int
  num_pairs: int
  num_genuine: int
  tar_at_far: dict
  auc: float
  flip_test: bool
  detector_score: bool
  norm_score: bool
  fpr: np.ndarray
  tpr: np.ndarray
  scores: np.ndarray

  def as_dict(self):
    """JSON-ready summary; `tar_at_far` keys are `str(far)`, values fractions."""
    return {
        "target": self.target,
        "num_images": self.num_images,
        "num_templates": self.num_templates,
        "num_pairs": self.num_pairs,
        "num_genuine": self.num_genuine,
        "num_impostor": self.num_pairs - self.num_genuine,
        "tar_at_far": {str(far): tar for far, tar in self.tar_at_far.items()},
        "auc": self.auc,
        "test_mode": {"flip_test": self.flip_test, "detector_score": self.detector_score,
                      "norm_score": self.norm_score},
    }


def evaluate_embeddings(meta, original, flipped=None, detector_score=True, norm_score=True,
                        method=None):
  """The protocol after embedding: weight, pool, score, ROC, TAR@FAR.

  Args:
    meta: the `IJBMeta` the embeddings belong to.
    original: [n, D] raw embeddings, in the order of `meta`'s images.
    flipped: [n, D] raw embeddings of the mirror images, or None (no flip).
    detector_score: multiply each image by its detector score.
    norm_score: keep the embedding norms (False: L2-normalise each image).
    method: the table's row name (default: the target in lower case, as
      InsightFace names its score file).

  Returns:
    An `IJBResult`.
  """
  features = templates_lib.image_features(
      original, flipped, meta.detector_scores if detector_score else None, norm_score)
  template_ids, template_features = templates_lib.pool_templates(
      features, meta.templates, meta.medias)
  scores = templates_lib.score_pairs(template_ids, template_features, meta.pairs)
  fpr, tpr, _ = tar_far.roc_curve(meta.labels, scores)
  return IJBResult(
      target=meta.paths.target, method=method or meta.paths.target.lower(),
      num_images=meta.num_images, num_templates=len(template_ids),
      num_pairs=meta.num_pairs, num_genuine=int(np.count_nonzero(meta.labels)),
      tar_at_far=tar_far.tar_at_far(fpr, tpr), auc=tar_far.auc(fpr, tpr),
      flip_test=flipped is not None, detector_score=detector_score, norm_score=norm_score,
      fpr=fpr, tpr=tpr, scores=scores)


def run_protocol(embed_fn, meta, batch_size=64, flip_test=True, detector_score=True,
                 norm_score=True, num_threads=None, verbose=True, echo=print):
  """Embeds every image of `meta` with `embed_fn` and evaluates.

  Args:
    embed_fn: a Keras model or a callable uint8 RGB [b, H, W, 3] -> raw [b, D].
    meta: an `IJBMeta` (`read_ijb_meta`).
    batch_size: images per forward pass (at least 1).
    flip_test, detector_score, norm_score: InsightFace's test modes.
    num_threads: threads decoding and aligning the loose crops, at least 1
      (None: the CPU count, at most 8).
    verbose: progress over the images.
    echo: called with a timing line.

  Returns:
    An `IJBResult`.

  Raises:
    ValueError, OSError: an image that cannot be read, decoded or aligned.
  """
  start = time.time()
  original, flipped = faces.embed_images(embed_fn, meta, batch_size, flip_test,
                                         num_threads=num_threads, verbose=verbose)
  embedded = time.time()
  result = evaluate_embeddings(meta, original, flipped, detector_score, norm_score)
  echo(f"[{meta.paths.target}] {meta.num_images} images embedded in {embedded - start:.1f} s "
       f"({meta.num_images / max(embedded - start, 1e-9):.1f} images/s); "
       f"{result.num_templates} templates, {result.num_pairs} pairs pooled, scored and "
       f"ranked in {time.time() - embedded:.1f} s")
  return result


def evaluate_ijb(model_path, ijb_dir, target="IJBC", batch_size=64, flip_test=True,
                 detector_score=True, norm_score=True, output_json=None, roc_dir=None,
                 num_threads=None, echo=print):
  """IJB-B / IJB-C 1:1 verification of a model; prints InsightFace's table.

  The output paths, the meta files and every image's existence are checked
  before the model loads, so a bad layout or output fails in seconds.

  Args:
    model_path: SavedModel export, training workdir or `.keras` file.
    ijb_dir: the directory with `loose_crop/` and `meta/`.
    target: "IJBC" or "IJBB".
    batch_size: images per forward pass.
    flip_test, detector_score, norm_score: InsightFace's test modes.
    output_json: optional path for `IJBResult.as_dict()` (written atomically).
    roc_dir: optional directory for `TARGET_roc.png` (e.g. `ijbc_roc.png`).
    num_threads: threads decoding and aligning the loose crops, at least 1
      (None: the CPU count, at most 8).
    echo: called with each line to show the user.

  Returns:
    The `IJBResult`.

  Raises:
    ValueError: malformed meta files, images or model, or an output path that
      cannot be written (one line, named).
    OSError: a missing file or image.
  """
  faces.check_options(batch_size, num_threads)
  roc_name = f"{target.lower()}_roc.png"
  if output_json:
    atomic.check_output_file(output_json, "--output_json")
  if roc_dir:
    atomic.check_output_directory(roc_dir, "--roc_dir", [roc_name])
  meta = ijb_meta.read_ijb_meta(ijb_dir, target)
  echo(f"[{target}] {meta.num_images} images, {len(np.unique(meta.templates))} templates, "
       f"{meta.num_pairs} pairs ({int(np.count_nonzero(meta.labels))} genuine)")
  model = faces.load_model(model_path)
  result = run_protocol(model, meta, batch_size, flip_test, detector_score, norm_score,
                        num_threads=num_threads, echo=echo)
  if roc_dir:
    report.plot_roc(result, os.path.join(roc_dir, roc_name))
  if output_json:
    summary = dict(result.as_dict(), model=os.fspath(model_path))
    atomic.write_json(output_json, summary, indent=2, make_dirs=True)
  echo(report.format_table(result))
  return result
