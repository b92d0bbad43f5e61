"""Test-wide settings: quiet TensorFlow, repository paths, the mxnet reference interpreter."""
import glob
import os
import pathlib
import socket
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def run_tool(name, *args, check=True, timeout=600, env=None):
  """Runs `python tools/NAME.py ARGS...` in a subprocess; returns CompletedProcess."""
  full_env = dict(os.environ, **(env or {}))
  proc = subprocess.run([sys.executable, str(TOOLS / f"{name}.py"), *map(str, args)],
                        capture_output=True, text=True, timeout=timeout, env=full_env)
  if check and proc.returncode != 0:
    raise AssertionError(f"tools/{name}.py failed ({proc.returncode}):\n"
                         f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
  return proc


def assert_same_embeddings(actual, expected):
  """max |diff| <= 1e-4 * ||expected|| and cosine >= 0.99999, row by row."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  norms = np.linalg.norm(expected, axis=1)
  assert np.all(np.abs(actual - expected).max(axis=1) <= 1e-4 * norms)
  cosine = (actual * expected).sum(1) / (np.linalg.norm(actual, axis=1) * norms)
  assert cosine.min() >= 0.99999, cosine


@pytest.fixture(scope="session")
def mxnet_python():
  """Path to the interpreter of the separate mxnet venv (`make test` sets it up)."""
  path = os.environ.get("TFFACE_MXNET_PYTHON")
  if not path:
    candidate = REPO / ".venv-mxnet" / "bin" / "python"
    path = str(candidate) if candidate.exists() else None
  if not path:
    if os.environ.get("CI"):
      pytest.fail("TFFACE_MXNET_PYTHON is not set and .venv-mxnet is missing; run `make test`")
    pytest.skip("mxnet reference venv not available (run `make test` to create it)")
  return path


def free_ports(n):
  """`n` TCP ports on 127.0.0.1 that were free a moment ago (for worker clusters)."""
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def run_worker_cluster(command, num_workers=2, timeout=400):
  """Runs `command` as every worker of a cluster on 127.0.0.1 (TF_CONFIG), waits.

  Returns:
    `[(stdout, stderr), ...]` per worker index, after asserting each exited 0.
  """
  import json  # pylint: disable=g-import-not-at-top
  workers = [f"127.0.0.1:{p}" for p in free_ports(num_workers)]
  procs = []
  for index in range(num_workers):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
    procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  try:
    outputs = [proc.communicate(timeout=timeout) for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, (_, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-4000:]
  return outputs


def tensorboard_scalars(workdir, tag="train/loss"):
  """Full-precision scalars `{step: value}` of one tag from a workdir's event files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          out[event.step] = float(tf.make_ndarray(value.tensor))
  return out


@pytest.fixture
def dir_and_file(tmp_path):
  """An existing directory and an existing file in `tmp_path`: output paths that
  are the wrong kind (a directory where a file is wanted, and the reverse)."""
  a_dir, a_file = tmp_path / "a_dir", tmp_path / "a_file"
  a_dir.mkdir()
  a_file.write_text("x")
  return a_dir, a_file
