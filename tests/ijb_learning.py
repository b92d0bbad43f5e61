"""A trained synthetic model beats an untrained one on the synthetic IJB set.

`check_trained_beats_untrained(workdir, ijb_dir)` is the check; the learning
test (tests/test_learning.py) runs it on the demo's trained workdir, so that
one training run serves both (it took 2 minutes of its own before).
"""

FAR = 1e-2
MIN_GAIN = 0.25  # TAR@FAR=1e-2: about 0.64 trained (200 steps) vs 0.08 untrained


def check_trained_beats_untrained(workdir, ijb_dir, far=FAR, min_gain=MIN_GAIN):
  """IJB-C TAR@FAR of a training workdir's model vs the same network untrained.

  The untrained network is the workdir's backbone re-initialized
  (`keras.models.clone_model`): same architecture, fresh random weights.

  Args:
    workdir: a training workdir (`backbone.keras`).
    ijb_dir: a synthetic IJB set (`tools/make_synthetic_ijb.py`).
    far: the FAR compared.
    min_gain: how much higher the trained TAR must be.

  Returns:
    `(trained, untrained)` `IJBResult`s.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from tfface.data.insightface import ijb_meta  # pylint: disable=g-import-not-at-top
  from tfface.evaluation.ijb import faces  # pylint: disable=g-import-not-at-top
  from tfface.evaluation.ijb import runner  # pylint: disable=g-import-not-at-top

  meta = ijb_meta.read_ijb_meta(str(ijb_dir), "IJBC")
  trained_model = faces.load_model(str(workdir))
  untrained_model = keras.models.clone_model(trained_model.keras_model)
  trained, untrained = (runner.run_protocol(m, meta, verbose=False)
                        for m in (trained_model, untrained_model))
  print(f"IJB TAR@FAR={far:g}: trained {trained.tar_at_far[far]:.4f}, untrained "
        f"{untrained.tar_at_far[far]:.4f}; AUC {trained.auc:.4f} vs {untrained.auc:.4f}")
  assert trained.tar_at_far[far] >= untrained.tar_at_far[far] + min_gain, (
      trained.tar_at_far, untrained.tar_at_far)
  assert trained.auc > untrained.auc
  return trained, untrained
