"""MS1MV2 (faces_emore, 85,742 identities, 5,822,653 images): the ArcFace paper's runs.

  python tools/rec2tfrecord.py --rec_dir=datasets/faces_emore \
      --output_dir=datasets/faces_emore/tfrecords
  python tools/train.py --network r100 --loss arcface --dataset emore
  python tools/train.py --network r50 --loss cosface --dataset emore
  python tools/train.py --network m1 --loss softmax --dataset emore

Verifies on lfw, cfp_fp and agedb_30 from datasets/faces_emore every 2000
steps; the best backbone by agedb_30 is kept. Expected (paper, r100 ArcFace,
batch 512 on 4-8 GPUs, 180k steps): LFW 99.83, CFP-FP 98.37, AgeDB-30 98.15.
"""
from tfface.training import config as config_lib
from tfface.training import datasets


def get_config():
  config = config_lib.base_config()
  datasets.apply_dataset(config, "emore")
  return config
