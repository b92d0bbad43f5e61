"""Shared entry-point wrapper for the tools: absl `app.run` plus clean failures.

Library code raises `ValueError` / `OSError` (and their subclasses) with
messages that already name the file and the place; here they become one
`error: ...` line on stderr and exit status 1 instead of a traceback.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402  (after the TF log level is set)


def run(main):
  """Runs `main(argv)` under absl; expected errors exit 1 with a one-line message."""

  def _guarded(argv):
    try:
      return main(argv)
    except (ValueError, OSError, KeyError) as e:
      msg = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"error: {msg}", file=sys.stderr)
      sys.exit(1)

  app.run(_guarded)
