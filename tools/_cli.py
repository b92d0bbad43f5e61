"""Shared entry-point wrapper for the tools: absl `app.run` plus clean failures.

* Library code raises `ValueError` / `OSError` (and their subclasses) with
  messages that already name the file and the place; here they become one
  `error: ...` line on stderr and exit status 1 instead of a traceback. A bad
  flag value (outside a declared `lower_bound`, say) gets the same one line,
  and Ctrl-C one line too (exit status 130).
* `--help`, `-h`, `--helpshort` and `--helpfull` print the help and exit 0
  (absl exits 1), and the help of every flag marked required says so.
* TensorFlow is imported after flag parsing (fast `--help`) and only for
  tools that need it (`run(main, tensorflow=False)` for the data tools, which
  start in a fraction of a second), with its start-up noise filtered out.
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
REQUIRED = " (required)"
# The message of absl's `mark_flag_as_required` validator: how a flag is
# recognized as required (absl keeps no other mark).
_REQUIRED_MESSAGE = "Flag --{} must have a value other than None."


def import_tensorflow():
  """Imports TensorFlow, dropping its start-up INFO lines unless logging asks for them.

  Everything else TensorFlow writes to stderr while loading (warnings,
  errors) is passed on. TF_CPP_MIN_LOG_LEVEL=0 keeps everything.
  """
  if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
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


class _HelpFlag(app.HelpFlag):
  """`--help` / `-h`, exiting 0: asking for help is not an error."""

  SHORT_NAME = "h"

  def parse(self, arg):
    if self._parse(arg):
      app.usage(shorthelp=True, writeto_stdout=True)
      print()
      print("Try --helpfull to get a list of all flags.")
      sys.exit(0)


class _HelpshortFlag(_HelpFlag):
  """`--helpshort`, an alias of `--help`."""

  NAME = "helpshort"
  SHORT_NAME = None


class _HelpfullFlag(app.HelpfullFlag):
  """`--helpfull`, exiting 0."""

  def parse(self, arg):
    if self._parse(arg):
      app.usage(writeto_stdout=True)
      sys.exit(0)


def _define_help_flags():
  """Replaces absl's help flags (which exit 1) with ones that exit 0; idempotent."""
  app.define_help_flags()
  if isinstance(flags.FLAGS["help"], _HelpFlag):
    return
  for name in ("help", "?", "helpshort", "helpfull"):
    delattr(flags.FLAGS, name)
  for flag in (_HelpFlag(), _HelpshortFlag(), _HelpfullFlag()):
    flags.DEFINE_flag(flag)


def _required_flags() -> list:
  """The flags marked with `flags.mark_flag(s)_as_required`, in definition order."""
  found = {}
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if any(getattr(v, "message", None) == _REQUIRED_MESSAGE.format(flag.name)
           for v in flag.validators):
      found[flag.name] = flag
  return list(found.values())


def _mark_required_in_help():
  """Appends " (required)" to the help of every flag marked required."""
  for flag in _required_flags():
    if not flag.help.endswith(REQUIRED):
      flag.help += REQUIRED


def _parse_flags(argv):
  """absl's flag parsing, with a bad flag reported as one `error:` line, exit 1."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    missing = [f"--{f.name}" for f in _required_flags()
               if _REQUIRED_MESSAGE.format(f.name) in str(e)]
    message = (f"missing required flag(s) {', '.join(missing)} (see --help)" if missing
               else str(e).replace("\n", " "))
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


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


def run(main, tensorflow: bool = True):
  """Runs `main(argv)` under absl; expected errors exit 1 with a one-line message.

  Args:
    main: the tool's `main(argv)`.
    tensorflow: import TensorFlow (quietly) before `main`; False for tools
      that never need it, or import it themselves with `import_tensorflow`.
  """
  _adopt_tool_as_main(main.__module__)
  _define_help_flags()
  _mark_required_in_help()

  def _guarded(argv):
    try:
      if tensorflow:
        import_tensorflow()  # after flag parsing: --help stays fast
      return main(argv)
    except (ValueError, OSError, KeyError) as e:
      msg = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"error: {msg}", file=sys.stderr)
      sys.exit(1)
    except KeyboardInterrupt as e:  # Ctrl-C: a line, not a traceback; 128 + SIGINT
      print(f"error: {e or 'interrupted'}", file=sys.stderr)
      sys.exit(130)

  app.run(_guarded, flags_parser=_parse_flags)
