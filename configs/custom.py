"""Your own dataset, transcoded to datasets/custom/tfrecords (or --data_dir).

  python tools/rec2tfrecord.py --rec_dir=MY_REC_DIR --output_dir=datasets/custom/tfrecords
  python tools/train.py --dataset custom --network r50 --loss arcface \
      --val_bins=datasets/custom/lfw.bin

Identities and images come from the manifest. The paper's recipe (emore.py)
applies with its length in epochs, so a smaller dataset trains for
proportionally fewer steps (--total_steps overrides). What it reaches depends
on your data; on CASIA-WebFace (10,572 identities) the ArcFace paper's R50
reached LFW 99.53, CFP-FP 95.56, AgeDB-30 95.15.
"""
import os

from tfface.training import config as config_lib
from tfface.training import datasets


def get_config():
  config = config_lib.load_config_file(os.path.join(os.path.dirname(__file__), "emore.py"))
  datasets.locate(config, "custom")
  return config
