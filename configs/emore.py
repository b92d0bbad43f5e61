"""MS1MV2 (faces_emore, 85,742 identities, 5,822,653 images): the ArcFace paper's recipe.

  python tools/rec2tfrecord.py --rec_dir=datasets/faces_emore \
      --output_dir=datasets/faces_emore/tfrecords
  python tools/train.py --network r100 --loss arcface --dataset emore
  python tools/train.py --network r50 --loss cosface --dataset emore
  python tools/train.py --network m1 --loss softmax --dataset emore

LResNet100E-IR, ArcFace s = 64, m = 0.5; SGD momentum 0.9, coupled weight
decay 5e-4; lr 0.1 for a global batch of 512 (scaled linearly with the actual
batch), x0.1 at 100k and 160k of 180k steps of 512 images. This is also the
default config of tools/train.py, as emore was InsightFace's default dataset.
Verifies on lfw, cfp_fp and agedb_30 from datasets/faces_emore every 2000
steps; the best backbone by agedb_30 is kept.

Expected (the paper, r100 ArcFace, batch 512 on 4-8 GPUs, 180k steps):
LFW 99.83, CFP-FP 98.37, AgeDB-30 98.15.
"""
from tfface.training import config as config_lib
from tfface.training import datasets


def get_config():
  config = config_lib.base_config()
  datasets.locate(config, "emore")
  config.network = "r100"
  config.loss = "arcface"
  config.head.s = 64.0
  config.batch_size = 128  # per GPU: 4 GPUs make the paper's 512
  config.base_lr = 0.1  # per 512 images
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.schedule.kind = "step"
  config.schedule.decay_at = (100_000 / 180_000, 160_000 / 180_000)
  config.epochs = 180_000 * 512 / 5_822_653  # the paper's 180k steps of 512
  config.checkpoint_every = 2000
  config.verify_every = 2000
  return config
