"""Every tool's flags behave alike: help exits 0 and marks required flags; bad values exit 1."""
import ast
import re

import pytest

from conftest import TOOLS
from conftest import run_tool

_TOOLS = sorted(p.stem for p in TOOLS.glob("*.py") if not p.stem.startswith("_"))


def _required_flags(tool: str) -> list[str]:
  """The flag names a tool passes to `flags.mark_flag(s)_as_required`, from its source."""
  names = []
  for node in ast.walk(ast.parse((TOOLS / f"{tool}.py").read_text())):
    if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("mark_flag"):
      argument = node.args[0]
      items = argument.elts if isinstance(argument, ast.List) else [argument]
      names += [item.value for item in items]
  return names


def test_the_tools_are_found():
  assert {"rec2tfrecord", "train", "verify", "inspect_data"} <= set(_TOOLS)
  assert _required_flags("verify") == ["model", "bins"]  # the source walk finds them


def _help_entries(text: str) -> dict[str, str]:
  """`{flag name: its help text}` from absl's help output."""
  parts = re.split(r"(?:^|\s)--(?:\[no\])?(\w+): ", " ".join(text.split()))  # absl wraps lines
  return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("tool", _TOOLS)
def test_help_exits_0_and_marks_required_flags(tool):
  proc = run_tool(tool, "--help", check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  entries = _help_entries(proc.stdout)
  required = _required_flags(tool)
  assert entries and all(name in entries for name in required), entries
  marked = [name for name, text in entries.items() if "(required)" in text]
  assert sorted(marked) == sorted(required)


@pytest.mark.parametrize("argument", ["-h", "--helpfull", "--helpshort"])
def test_every_help_flag_exits_0(argument):
  proc = run_tool("rec2img", argument, check=False)
  assert proc.returncode == 0 and "--rec_dir" in proc.stdout


def test_out_of_range_value_is_one_error_line():
  proc = run_tool("verify", "--model=m", "--bins=b.bin", "--batch_size=0", check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "error: flag --batch_size=0: 0 is not a positive integer"]


def test_missing_required_flags_are_named_on_one_line():
  proc = run_tool("rec2tfrecord", "--num_shards=4", check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "error: missing required flag(s) --rec_dir, --output_dir (see --help)"]


# Numeric flags without a lower bound, each for a reason.
_UNBOUNDED = {("compare", "pair"),  # negative indices count from the end
              ("import_weights", "input_mean")}  # any pixel mean


def _numeric_flags(tool: str) -> list[tuple[str, bool]]:
  """`(name, has lower_bound)` of each DEFINE_integer / DEFINE_float in a tool's source."""
  found = []
  for node in ast.walk(ast.parse((TOOLS / f"{tool}.py").read_text())):
    if (isinstance(node, ast.Call) and
        getattr(node.func, "attr", "") in ("DEFINE_integer", "DEFINE_float")):
      found.append((node.args[0].value,
                    any(k.arg == "lower_bound" for k in node.keywords)))
  return found


def test_numeric_flags_declare_a_lower_bound():
  assert ("verify", "batch_size") in {(t, n) for t in _TOOLS for n, _ in _numeric_flags(t)}
  unbounded = sorted((tool, name) for tool in _TOOLS for name, bounded in _numeric_flags(tool)
                     if not bounded and (tool, name) not in _UNBOUNDED)
  assert unbounded == []


@pytest.mark.parametrize("tool,flag,message", [
    ("eval_ijb", "--batch_size=0", "0 is not a positive integer"),
    ("eval_ijb", "--batch_size=-1", "-1 is not a positive integer"),
    ("eval_ijb", "--num_threads=0", "0 is not a positive integer"),
    ("eval_ijb", "--num_threads=-3", "-3 is not a positive integer"),
    ("make_synthetic_ijb", "--seed=-1", "-1 is not a non-negative integer"),
    ("make_synthetic_ijb", "--num_identities=1", "1 is not integer >= 2"),
])
def test_bad_numeric_flag_is_one_error_line_naming_it(tool, flag, message):
  required = {"eval_ijb": ["--model=m", "--ijb_dir=d"], "make_synthetic_ijb": ["--output_dir=o"]}
  proc = run_tool(tool, *required[tool], flag, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [f"error: flag {flag}: {message}"]
