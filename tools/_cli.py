"""Shared entry-point wrapper for the tools: absl `app.run` plus clean failures.

Library code raises `ValueError` / `OSError` (and their subclasses) with
messages that already name the file and the place; here they become one
`error: ...` line on stderr and exit status 1 instead of a traceback.
"""
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402  (after the TF log level is set)
from absl import flags  # noqa: E402

# What TensorFlow 2.21's C++ side prints while it loads: absl INFO lines
# (`I0000 00:00:1795872630.890231 123 port.cc:153] oneDNN custom operations...`,
# the CPU-feature notice and its second line) and absl's own note that logging
# is not initialized yet. TF_CPP_MIN_LOG_LEVEL no longer silences them.
_STARTUP_NOISE = re.compile(
    r"^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written "
    r"to STDERR"
    r"|To enable the following instructions: .* rebuild TensorFlow with the "
    r"appropriate compiler flags\.)$")


def _import_tensorflow():
  """Imports TensorFlow, dropping its start-up INFO lines unless logging asks for them.

  Everything else TensorFlow writes to stderr while loading (warnings,
  errors) is passed on. TF_CPP_MIN_LOG_LEVEL=0 keeps everything.
  """
  if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
      sys.stderr.write("".join(l for l in lines if not _STARTUP_NOISE.match(l.rstrip("\n"))))
      sys.stderr.flush()


def _adopt_tool_as_main(module_name: str):
  """Makes `--help` of a `tfface-NAME` console script describe the tool.

  absl's help prints `__main__`'s docstring and the key flags of the module
  named `sys.argv[0]`; under a console script `__main__` is the generated
  wrapper, so both would be empty. `python tools/NAME.py` needs nothing.
  """
  if module_name == "__main__" or module_name not in sys.modules:
    return
  tool = sys.modules[module_name]
  sys.modules["__main__"].__doc__ = tool.__doc__
  for flag in flags.FLAGS.get_key_flags_for_module(tool):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main):
  """Runs `main(argv)` under absl; expected errors exit 1 with a one-line message."""
  _adopt_tool_as_main(main.__module__)

  def _guarded(argv):
    try:
      _import_tensorflow()  # after flag parsing: --help stays fast
      return main(argv)
    except (ValueError, OSError, KeyError) as e:
      msg = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"error: {msg}", file=sys.stderr)
      sys.exit(1)

  app.run(_guarded)
