"""InsightFace's recipe: LResNet100E-IR + ArcFace on MS1MV2 (faces_emore).

  python tools/train.py --config=configs/base.py

Every field a run has, with the paper's values: SGD momentum 0.9, coupled
weight decay 5e-4, lr 0.1 for a global batch of 512 scaled linearly with the
actual batch, x0.1 at 100k and 160k of 180k steps (at batch 512), s = 64,
m = 0.5. The other configs call this one and change a few fields; the
fields are documented in `tfface/training/config.py`.
"""
from tfface.training import config as config_lib


def get_config():
  return config_lib.base_config()
