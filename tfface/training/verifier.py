"""Verification during training: InsightFace's protocol on the run's `.bin` targets.

The `.bin` images are decoded once at start; every `verify_every` steps the
backbone embeds them and their flips (`tfface.evaluation.verify`, through
the one embedding wrapper of `tfface.inference`), with progress lines on
stderr. Results go to `WORKDIR/verification.json`, one entry per target stem:

  {"synth_val": {"step": 400, "accuracy_flip_mean": 0.95, "accuracy_flip_std": 0.01,
                 "xnorm": 11.2, "best_threshold": 1.31, "bin": "/data/synth_val.bin",
                 "best_accuracy": 0.95, "best_step": 400}}

`bin` lets `tools/export.py` measure the served embedding's threshold on the
same target; `accuracy_at_start` (with `verify_at_start`) is the untrained
model's, the "before" of a run. As in InsightFace, the last target decides
which backbone is the best one.
"""
import json
import os

from tfface import evaluation
from tfface import inference
from tfface.data.insightface import verification_bin
from tfface.training import checkpointing

RESULTS = "verification.json"


class Verifier:
  """Runs the verification targets of a run and remembers the best results.

  Args:
    paths: `.bin` files, in order (the last one selects the best backbone).
    image_size: `(height, width)` of the model input.
    batch_size: images per forward pass.
    workdir: where `verification.json` lives (read on resume).
    verbose: show decoding and embedding progress on stderr.
  """

  def __init__(self, paths, image_size, batch_size, workdir, verbose=True):
    self.batch_size = int(batch_size)
    self.verbose = verbose
    self.path = os.path.join(workdir, RESULTS)
    self.targets = []
    for path in paths:
      vbin = verification_bin.load_bin(path)
      evaluation.check_foldable(vbin)  # at start, not at the first verification
      images = evaluation.decode_bin_images(vbin, image_size, verbose)
      self.targets.append((vbin, images))
    self.results = {}
    self._model = None
    if os.path.isfile(self.path):
      with open(self.path) as f:
        try:
          self.results = json.load(f)
        except json.JSONDecodeError as e:
          raise ValueError(f"{self.path}: not valid JSON ({e}); delete it to start "
                           "the best-so-far records afresh") from e

  @property
  def names(self):
    return [vbin.name for vbin, _ in self.targets]

  def best(self, name):
    """Best Accuracy-Flip recorded for a target, or -1."""
    return self.results.get(name, {}).get("best_accuracy", -1.0)

  def run(self, backbone, step, record_best=True):
    """Verifies every target with `backbone`.

    Args:
      backbone: the Keras backbone (uint8/float RGB in, raw embeddings out).
      step: the training step, for the records.
      record_best: False measures without competing for the best (the
        untrained model at step 0 is a baseline, not a model to keep).

    Returns:
      `(results, improved)`: a list of `(VerificationResult, best_so_far)`
      and whether the last target reached a new best.
    """
    # One wrapper (and traced function) per backbone, reused by every verification.
    if self._model is None or self._model.keras_model is not backbone:
      self._model = inference.from_keras(backbone)
    out, improved = [], False
    for vbin, images in self.targets:
      result = evaluation.verify(self._model, vbin, batch_size=self.batch_size,
                                 images=images, verbose=self.verbose)
      name = result.name
      previous = self.best(name)
      record = self.results.setdefault(name, {})
      record.update({
          "step": int(step), "accuracy_flip_mean": result.accuracy_flip_mean,
          "accuracy_flip_std": result.accuracy_flip_std, "xnorm": result.xnorm,
          "best_threshold": result.best_threshold,
          "bin": os.path.abspath(vbin.path)})
      if step == 0:  # the untrained model: the "before" of a run's summary
        record["accuracy_at_start"] = result.accuracy_flip_mean
      improved = record_best and result.accuracy_flip_mean > previous
      if improved:
        record.update({"best_accuracy": result.accuracy_flip_mean, "best_step": int(step)})
      out.append((result, record.get("best_accuracy", -1.0)))
    return out, improved

  def save(self):
    """Writes `verification.json` atomically (call on the chief only)."""
    checkpointing.write_json_atomically(self.path, self.results)
