"""A run killed with SIGKILL resumes from its last checkpoint exactly where it stood.

Deterministic input mode makes the comparison exact: the resumed run must end
with the same weights as an uninterrupted run of the same command, and print
the same loss and learning rate at every step after the restart.
"""
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from conftest import TOOLS
import tfface.models  # noqa: F401  (registers the layers that .keras files need)
import training_data

TOTAL = 12


def _command(data_dir, workdir):
  return [sys.executable, str(TOOLS / "train.py"), "--dataset=synthetic",
          f"--data_dir={data_dir}",
          f"--workdir={workdir}", f"--total_steps={TOTAL}", "--checkpoint_every=3",
          "--batch_size=8", "--config.input.deterministic=True",
          # The whole step compiled with XLA: its exactness and resume are tested here.
          "--config.jit_compile=True",
          "--config.log_every=1", "--config.verify_at_start=False",
          "--config.val_dir="]  # no verification (not even a demo_run/ lying around)


def _steps(stdout):
  """{step: 'loss ... lr ...'} from the progress lines (images/s and ETA dropped)."""
  return {int(m.group(1)): m.group(2) for m in
          re.finditer(r"^step (\d+)/\d+ (loss \S+ acc \S+ lr \S+)", stdout, re.M)}


def _latest_checkpoint(workdir):
  """The step of the checkpoint the state file names, 0 if none yet."""
  try:
    with open(workdir / "ckpt" / "checkpoint") as f:
      match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', f.read(), re.M)
  except FileNotFoundError:
    return 0
  return int(match.group(1)) if match else 0


def _sha(stdout):
  return re.search(r"trainable weights sha256 ([0-9a-f]{64})", stdout).group(1)


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_like_an_uninterrupted_run(tmp_path):
  data = str(tmp_path / "data")
  # Two records that do not decode: dropped early, they shifted a resumed run
  # that replayed the stream by counting records (tfface 0.1) by two images.
  images = [training_data.jpeg(training_data.face_like(c, i))
            for c in range(8) for i in range(8)]
  images[1], images[6] = images[1][:200], b"not an image"
  training_data.write_dataset(data, images, [c for c in range(8) for _ in range(8)],
                              num_shards=2)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

  reference = subprocess.run(_command(data, tmp_path / "reference"), env=env,
                             capture_output=True, text=True, timeout=600, check=True)

  workdir = tmp_path / "killed"
  victim = subprocess.Popen(_command(data, workdir), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
  # Kill once checkpoint 6 is complete: its .index appears before the
  # CheckpointManager's state file names it, and a kill in between rightly
  # resumes from the one before.
  deadline = time.time() + 500
  while (_latest_checkpoint(workdir) < 6 and victim.poll() is None
         and time.time() < deadline):
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  killed_output = victim.communicate(timeout=60)[0]
  assert f"finished at step {TOTAL}" not in killed_output, "the run ended before the kill"

  resumed = subprocess.run(_command(data, workdir), env=env, capture_output=True,
                           text=True, timeout=600, check=True)
  match = re.search(r"resumed from \S+ckpt-(\d+) at step (\d+)", resumed.stdout)
  assert match, resumed.stdout
  start = int(match.group(2))
  assert match.group(1) == match.group(2) and 6 <= start < TOTAL
  # The input continued from the position the checkpoint saved (no replay).
  assert f"input position restored from checkpoint {start}" in resumed.stdout, resumed.stdout

  expected, got = _steps(reference.stdout), _steps(resumed.stdout)
  assert sorted(got) == list(range(start + 1, TOTAL + 1))
  for step in got:
    assert got[step] == expected[step], step  # same loss and learning rate
  assert _sha(resumed.stdout) == _sha(reference.stdout)  # same weights at the end
  # BatchNorm moving statistics too, in the exported backbones.
  a = keras.saving.load_model(tmp_path / "reference" / "backbone.keras")
  b = keras.saving.load_model(workdir / "backbone.keras")
  for x, y in zip(a.weights, b.weights):
    np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_ctrl_c_is_one_line_naming_the_checkpoint_to_resume_from(tmp_path):
  """Ctrl-C printed a KeyboardInterrupt traceback; now one line, exit 130, then resume."""
  data = str(tmp_path / "data")
  training_data.write_dataset(
      data, [training_data.jpeg(training_data.face_like(c, i)) for c in range(8)
             for i in range(8)], [c for c in range(8) for _ in range(8)], num_shards=2)
  workdir = tmp_path / "run"
  command = [a for a in _command(data, workdir) if "jit_compile" not in a]
  command = [a.replace(f"--total_steps={TOTAL}", "--total_steps=100000") for a in command]
  victim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  deadline = time.time() + 300
  while _latest_checkpoint(workdir) < 3 and victim.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  victim.send_signal(signal.SIGINT)
  out, err = victim.communicate(timeout=120)
  assert victim.returncode == 130, (out, err)
  assert "Traceback" not in err, err
  last = err.strip().splitlines()[-1]
  match = re.fullmatch(r"error: interrupted after step (\d+); the last checkpoint is "
                       r"(\S+ckpt-(\d+)): run the same command to resume from it", last)
  assert match, err
  assert int(match.group(3)) >= 3 and int(match.group(1)) >= int(match.group(3))
  assert os.path.isfile(match.group(2) + ".index")
