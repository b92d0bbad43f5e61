"""Shared entry-point wrapper for the tools: absl `app.run` plus clean failures.

Library code raises `ValueError` / `OSError` (and their subclasses) with
messages that already name the file and the place; here they become one
`error: ...` line on stderr and exit status 1 instead of a traceback.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402  (after the TF log level is set)
from absl import flags  # noqa: E402


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
      return main(argv)
    except (ValueError, OSError, KeyError) as e:
      msg = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"error: {msg}", file=sys.stderr)
      sys.exit(1)

  app.run(_guarded)
