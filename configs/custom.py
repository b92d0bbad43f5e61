"""Your own dataset, transcoded to datasets/custom/tfrecords (or --data_dir).

  python tools/rec2tfrecord.py --rec_dir=MY_REC_DIR --output_dir=datasets/custom/tfrecords
  python tools/train.py --dataset custom --network r50 --loss arcface \
      --val_bins=datasets/custom/lfw.bin

Identities and images come from the manifest; the paper's recipe applies
with its steps expressed in epochs, so a smaller dataset trains for
proportionally fewer steps (set --total_steps to override).
"""
from tfface.training import config as config_lib
from tfface.training import datasets


def get_config():
  config = config_lib.base_config()
  datasets.apply_dataset(config, "custom")
  return config
