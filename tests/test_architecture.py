"""The layers of docs/architecture.md hold: no upward import, no cycle, anywhere in tfface.

Every `import` / `from ... import` of a tfface module is collected from the
source (module-level and function-local alike), so a lower layer cannot
reach a higher one by hiding the import inside a function either.
"""
import ast
import collections
import pathlib

import pytest

from conftest import REPO

# Low to high, as docs/architecture.md draws them.
LAYERS = {
    "tfface": 0, "tfface.atomic": 0, "tfface.progress": 0,
    "tfface.data": 1, "tfface.align": 1,
    "tfface.losses": 2, "tfface.models": 2,
    "tfface.inference": 3,
    "tfface.input": 4, "tfface.evaluation": 4,
    "tfface.training": 5, "tfface.export": 5, "tfface.weights": 5,
    "tfface.serving": 6,
}


def _module_name(path):
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _package(module):
  """The layer key of a module: its longest prefix listed in LAYERS."""
  parts = module.split(".")
  for end in range(len(parts), 0, -1):
    key = ".".join(parts[:end])
    if key in LAYERS:
      return key
  raise KeyError(module)


def _imports():
  """{module: {imported tfface module, ...}} over every file of the package."""
  found = {}
  for path in sorted((REPO / "tfface").rglob("*.py")):
    module = _module_name(path)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names.update(a.name for a in node.names if a.name.startswith("tfface"))
      elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
          "tfface") and node.level == 0:
        for alias in node.names:
          # `from tfface.data import schema` imports the submodule when it is one.
          sub = f"{node.module}.{alias.name}"
          is_module = (REPO / pathlib.Path(*sub.split(".")).with_suffix(".py")).exists() or (
              REPO / pathlib.Path(*sub.split("."))).is_dir()
          names.add(sub if is_module else node.module)
    found[module] = names
  return found


IMPORTS = _imports()


def test_every_package_has_a_layer():
  for module in IMPORTS:
    _package(module)  # raises KeyError for a package docs/architecture.md lacks


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_no_module_imports_a_higher_layer(module):
  layer = LAYERS[_package(module)]
  upward = sorted(name for name in IMPORTS[module] if LAYERS[_package(name)] > layer)
  assert not upward, f"{module} (layer {layer}) imports higher layers: {upward}"


def _cycle(graph):
  """One cycle of a {node: {successor}} graph as a list, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_no_import_cycles_between_packages_or_modules():
  packages = collections.defaultdict(set)
  modules = collections.defaultdict(set)
  for module, names in IMPORTS.items():
    for name in names:
      if _package(name) != _package(module):
        packages[_package(module)].add(_package(name))
      # A package's __init__ importing its own modules is not a cycle.
      if name != module and not name.startswith(module + "."):
        modules[module].add(name)
  assert _cycle(packages) is None, f"package cycle: {' -> '.join(_cycle(packages))}"
  assert _cycle(modules) is None, f"module cycle: {' -> '.join(_cycle(modules))}"


def test_the_checker_catches_what_it_claims():
  # Negative controls on made-up graphs and modules.
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": {"c"}}) is None
  assert LAYERS[_package("tfface.data.tfrecord.schema")] < LAYERS[_package(
      "tfface.training.trainer")]
  assert "tfface.data.tfrecord.schema" in IMPORTS["tfface.training.datasets"]
