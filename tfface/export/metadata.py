"""What an export records about itself: `assets/tfface_metadata.json`.

The decision threshold stored with an export belongs to the embedding the
export serves. `serving_default` returns single-view embeddings, or
flip-summed ones with flip TTA, and the two need different thresholds: the
same pairs lie at other distances in each form.
So the threshold is measured at export time, with InsightFace's protocol, on
the served form of the exported weights:

* on `threshold_bin` when given;
* else on the training workdir's verification target (the `.bin` the trainer
  recorded in `verification.json`);
* or taken as given (`threshold`), then declared to be for the served form.

The metadata names the form (`threshold_embedding`: `single_view` or
`flip_sum`), so `tools/compare.py` and clients compare like with like.
"""
import os

import tfface
from tfface.data.insightface import verification_bin
from tfface.evaluation import verification
from tfface.inference import embedding as embedding_lib

# Workdir entries about the trainer's threshold; the export decides its own.
_WORKDIR_THRESHOLD_KEYS = ("threshold", "threshold_embedding", "threshold_target",
                           "threshold_bin")


def _threshold_bin(known, source, threshold_bin):
  """The `.bin` to measure on, or None when there is none to use."""
  if threshold_bin:
    return os.fspath(threshold_bin)
  if known.get("threshold_bin"):
    return known["threshold_bin"]
  if known.get("threshold") is not None:
    raise ValueError(
        f"{source}: verification.json names the target "
        f"{known.get('threshold_target')!r} but not its .bin file (a workdir from an "
        "older trainer), so the threshold of the served embedding cannot be measured; "
        "pass --threshold_bin=TARGET.bin, or --threshold")
  return None


def measure_threshold(model, bin_path, embedding, batch_size=64, verbose=True):
  """The metadata entries of a threshold measured on `bin_path`.

  Args:
    model: the Keras backbone being exported (or any `EmbeddingModel` input).
    bin_path: the verification `.bin`.
    embedding: the served form, `single_view` or `flip_sum`.
    batch_size: images per forward pass.
    verbose: show progress on stderr.

  Returns:
    `{"threshold", "threshold_embedding", "threshold_target", "threshold_bin",
    "threshold_source": "measured", "threshold_measurement": {...}}`.

  Raises:
    ValueError: the `.bin` is missing or unusable.
  """
  if not os.path.isfile(bin_path):
    raise ValueError(f"{bin_path}: verification .bin for the serving threshold not "
                     "found; pass --threshold_bin=FILE (or --threshold)")
  vbin = verification_bin.load_bin(bin_path)
  point = verification.measure_operating_point(model, vbin, embedding, batch_size,
                                               verbose=verbose)
  return {"threshold": point.threshold, "threshold_embedding": point.embedding,
          "threshold_target": vbin.name, "threshold_bin": os.path.abspath(bin_path),
          "threshold_source": "measured",
          "threshold_measurement": {"num_pairs": vbin.num_pairs, **point.as_dict()}}


def export_metadata(model, source, known, flip_tta, threshold=None, threshold_bin=None,
                    extra=None, verbose=True):
  """The contents of an export's `tfface_metadata.json`.

  Args:
    model: the Keras backbone being exported.
    source: the path it came from ("" for an in-memory model).
    known: what loading `source` found (a workdir's verification summary).
    flip_tta: whether `serving_default` flip-sums.
    threshold: a given threshold for the served form (no measurement).
    threshold_bin: a `.bin` to measure the threshold on (default: the
      workdir's verification target).
    extra: further entries, written as given.
    verbose: show the measurement's progress on stderr.

  Returns:
    A JSON-ready dict.

  Raises:
    ValueError: the threshold cannot be measured (see `_threshold_bin`).
  """
  served = embedding_lib.embedding_for_flip(flip_tta)
  info = {k: v for k, v in known.items() if k not in _WORKDIR_THRESHOLD_KEYS}
  info.update({"tfface_version": tfface.__version__, "source": source,
               "image_size": [int(v) for v in model.input_shape[1:3]],
               "embedding_size": int(model.output_shape[-1]), "flip_tta": bool(flip_tta),
               "threshold": None, "threshold_embedding": served})
  if threshold is not None:
    info.update({"threshold": float(threshold), "threshold_source": "given"})
  else:
    bin_path = _threshold_bin(known, source, threshold_bin)
    if bin_path is not None:
      info.update(measure_threshold(model, bin_path, served, verbose=verbose))
  info.update(extra or {})
  return info
