"""Glint360K (360,232 identities, 17,091,657 images) with arcface_torch's recipe.

  python tools/train.py --network r100 --loss cosface --dataset glint360k

Polynomial decay (power 2) over 20 epochs, lr 0.1 for 8 x 128 images, global
gradient-norm clip 5. The replicated FC holds 360,232 x 512 float32 (704 MiB)
on every replica. arcface_torch reports LFW 99.82 / CFP-FP 99.14 / AgeDB-30
98.45 for r50.
"""
from tfface.training import config as config_lib
from tfface.training import datasets


def get_config():
  config = config_lib.base_config()
  config.loss = "cosface"
  datasets.apply_dataset(config, "glint360k")
  return config
