"""Imports run one way: the import graph of src/facegan, read with `ast` (nothing is imported), has no cycle.

Every `import facegan...` and `from facegan... import ...` counts, at module level or inside a
function alike: a lazy import hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "src" / "facegan"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """facegan/train/loop.py -> facegan.train.loop; a package's __init__.py -> the package."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The facegan modules a file imports (`from facegan.data import open_prepared` names facegan.data)."""
    found: set[str] = set()
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..data import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            # `from facegan.models import dcgan` imports the submodule when there is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found - {name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the facegan modules it imports."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in files}
    return {module_name(path, root): imports_of(path, modules, root) for path in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_src_facegan_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "facegan.train.loop" in graph  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_but_the_cli_imports_the_training_loop():
    importers = sorted(name for name, targets in import_graph().items() if "facegan.train.loop" in targets)
    assert importers == ["facegan.cli"]


def test_the_cycle_finder_names_the_cycle(tmp_path):
    package = tmp_path / "facegan"
    (package / "train").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train" / "__init__.py").write_text("")
    (package / "config.py").write_text("def validate():\n    from facegan.metrics import names\n")
    (package / "metrics").mkdir()
    (package / "metrics" / "__init__.py").write_text("")
    (package / "metrics" / "names.py").write_text("from facegan.train.loop import train\n")
    (package / "train" / "loop.py").write_text("import facegan.config\nfrom . import state\n")
    (package / "train" / "state.py").write_text("x = 1\n")
    graph = import_graph(package)
    assert graph["facegan.train.loop"] == {"facegan.config", "facegan.train.state"}  # relative imports resolved
    assert find_cycle(graph) == ["facegan.config", "facegan.metrics.names", "facegan.train.loop", "facegan.config"]
    (package / "metrics" / "names.py").write_text("import re\n")
    assert find_cycle(import_graph(package)) is None


@pytest.mark.parametrize("module", ["facegan.metrics.names", "facegan.errors"])
def test_light_modules_import_without_torch(module):
    """Metric names parse without torch (a config is checked anywhere, before any heavy import)."""
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT).returncode == 0


def test_the_command_line_parser_is_built_without_torch():
    """`facegan prepare`, `info` and `--help` need no torch: the registries' names are read only when shown or checked."""
    code = "import sys, facegan.cli; facegan.cli.build_parser(); sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT).returncode == 0
