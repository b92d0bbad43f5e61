"""What `pip install .` puts in place works away from the checkout.

`setup.py build_py` lays the packages out as an installation does; the tools
are then run from there (not from `tools/`), as the `tfface-NAME` console
scripts run them.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

_CONSOLE_SCRIPT = """
import sys
from tfface_tools.{tool} import run
sys.argv[0] = "tfface-{tool}"
sys.exit(run())
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  build = tmp_path_factory.mktemp("build")
  for command in ("build_py", "build_ext"):
    subprocess.run([sys.executable, "setup.py", "-q", command, "--build-lib", str(build),
                    *(["--build-temp", str(build / ".temp")] if command == "build_ext" else [])],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
  return build


def _console(installed, tool, *args):
  env = dict(os.environ, PYTHONPATH=str(installed), TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-c", _CONSOLE_SCRIPT.format(tool=tool), *args],
                        cwd=installed, env=env, capture_output=True, text=True, timeout=300)


def test_installed_layout_has_library_tools_and_configs(installed):
  for path in ("tfface/atomic.py", "tfface/data/transcode/transcode.py", "tfface/input/pipeline.py", "tfface_tools/_cli.py",
               "tfface_tools/train.py", "tfface_configs/emore.py",
               "tfface_configs/synthetic.py"):
    assert (installed / path).is_file(), path
  if shutil.which("cc") or shutil.which("gcc"):  # the optional C framer, where it can build
    assert list((installed / "tfface/data/tfrecord").glob("_framer.*.so"))


def test_console_script_help_describes_the_tool(installed):
  proc = _console(installed, "rec2tfrecord", "--help")
  assert proc.returncode == 0, proc.stderr  # absl alone exits 1 after help
  text = proc.stdout + proc.stderr
  assert "globally shuffled, sharded TFRecords" in text  # the tool's docstring
  assert "--rec_dir" in text and "--num_shards" in text  # and its flags


def test_installed_train_finds_the_dataset_configs(installed):
  proc = _console(installed, "train", "--helpfull")
  text = proc.stdout + proc.stderr
  # The --config default lies in the installation, not the checkout (absl
  # wraps long defaults: compare without whitespace).
  expected = os.path.join(str(installed), "tfface_configs", "emore.py")
  assert "".join(expected.split()) in "".join(text.split()), text[:2000]
