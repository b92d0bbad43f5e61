"""Training really learns: the demo's job on the default synthetic dataset.

Generates the embedded synthetic faces, transcodes them and trains the tiny
ResNet-IR with ArcFace (configs/synthetic.py) through the tools, exactly as
`make demo` does, then checks Accuracy-Flip on `synth_val.bin`, whose
identities never appear in training.
"""
import json
import re

import pytest

from conftest import run_tool


@pytest.mark.slow
def test_demo_learns_held_out_identities(tmp_path):
  rec, tfr, workdir = tmp_path / "rec", tmp_path / "tfrecords", tmp_path / "train"
  run_tool("make_synthetic", f"--output_dir={rec}")
  run_tool("rec2tfrecord", f"--rec_dir={rec}", f"--output_dir={tfr}", "--quiet")
  proc = run_tool("train", "--dataset=synthetic", f"--data_dir={tfr}",
                  f"--val_bins={rec}/synth_val.bin", f"--workdir={workdir}", timeout=900)
  before = float(re.search(r"^Accuracy-Flip before training: (0\.\d{4})$", proc.stdout,
                           re.M).group(1))
  after = float(re.search(r"^Accuracy-Flip after training: (0\.\d{4})$", proc.stdout,
                          re.M).group(1))
  print(f"Accuracy-Flip before {before:.4f}, after {after:.4f}")
  assert after >= 0.90, proc.stdout
  assert after >= before + 0.2, proc.stdout
  with open(workdir / "verification.json") as f:
    # `after` was printed with 4 decimals: compare at that precision.
    assert round(json.load(f)["synth_val"]["best_accuracy"], 4) >= after
