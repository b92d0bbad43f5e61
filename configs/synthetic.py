"""The embedded default: a tiny ResNet-IR with ArcFace on the synthetic faces (`make demo`).

  python tools/make_synthetic.py --output_dir=demo_run/rec
  python tools/rec2tfrecord.py --rec_dir=demo_run/rec --output_dir=demo_run/tfrecords
  python tools/train.py --dataset synthetic --data_dir=demo_run/tfrecords \
      --val_bins=demo_run/rec/synth_val.bin --workdir=demo_run/train

The backbone is r18's builder with one unit per stage and 16/16/32/64
channels (the same LResNet-E-IR blocks, about 1/40 of r18's compute), a
128-d embedding, and ArcFace with s = 32 (s = 64 stalls this small model
from scratch). Prints `Accuracy-Flip before training` (random weights) and
`after training` on synth_val.bin, whose identities are not in training.
"""
import ml_collections

from tfface.training import config as config_lib
from tfface.training import datasets


def get_config():
  config = config_lib.base_config()
  datasets.apply_dataset(config, "synthetic")
  config.network = "r18"
  config.backbone.embedding_size = 128
  config.backbone.overrides = ml_collections.ConfigDict({
      "units": (1, 1, 1, 1), "widths": (16, 16, 32, 64), "stem_width": 16})
  config.verify_at_start = True
  return config
