"""A briefly trained synthetic model beats an untrained one on the synthetic IJB set.

`check_trained_beats_untrained(workdir, ijb_dir)` is the check; the test
trains its own small model through the tools (about 2 minutes on 2 CPU
cores). The learning test (tests/test_learning.py) trains a longer run and
may call the same check on its workdir.
"""
import pytest

from conftest import run_tool

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


@pytest.mark.slow
def test_briefly_trained_model_beats_untrained_on_synthetic_ijb(tmp_path):
  rec, tfr, workdir, ijb = (tmp_path / d for d in ("rec", "tfrecords", "train", "ijb"))
  run_tool("make_synthetic", f"--output_dir={rec}", "--num_identities=150",
           "--images_per_identity=20", "--num_pairs=20", "--num_val_identities=2")
  run_tool("rec2tfrecord", f"--rec_dir={rec}", f"--output_dir={tfr}", "--quiet")
  run_tool("train", "--dataset=synthetic", f"--data_dir={tfr}", f"--workdir={workdir}",
           "--total_steps=200", "--checkpoint_every=1000", timeout=600)
  run_tool("make_synthetic_ijb", f"--output_dir={ijb}")
  check_trained_beats_untrained(workdir, ijb)
