"""WebFace42M (2,059,906 identities, 42,474,557 images): arcface_torch's Partial FC recipe.

  python tools/rec2tfrecord.py --rec_dir=datasets/webface42m \
      --output_dir=datasets/webface42m/tfrecords
  python tools/train.py --dataset webface42m --network r100

arcface_torch's `wf42m_pfc02_r100`: CosFace (s = 64, m = 0.4), Partial FC with
sample rate 0.2, SGD momentum 0.9, weight decay 5e-4, lr 0.1 for a global
batch of 1024, polynomial decay (power 2) over 20 epochs, mixed float16. A
replicated head would hold 2,059,906 x 512 float32 centres plus momentum
(8.4 GB) on every GPU and all-reduce 4.2 GB per step; sharded over 8 GPUs each
holds 1.05 GB and nothing of the head is all-reduced (docs/distributed.md).

Expected (arcface_torch's README, WebFace42M-PartialFC-0.2, r100 at batch 4k on
16 GPUs): IJB-C TAR@FAR=1e-4 97.85, 1e-5 96.63, MFR-ALL 96.69.
"""
from tfface.training import config as config_lib
from tfface.training import datasets


def get_config():
  config = config_lib.base_config()
  datasets.locate(config, "webface42m")
  config.network = "r100"
  config.loss = "cosface"
  config.head.m1, config.head.m2, config.head.m3 = 1.0, 0.0, 0.4
  config.head.partial_fc = True
  config.head.sample_rate = 0.2
  config.batch_size = 128
  config.base_lr, config.reference_batch = 0.1, 1024  # arcface_torch: 8 GPUs x 128
  config.weight_decay = 5e-4
  config.schedule.kind = "polynomial"
  config.schedule.power = 2.0
  config.epochs = 20.0
  config.mixed_precision = "mixed_float16"
  config.checkpoint_every = 10_000
  config.verify_every = 10_000
  return config
