"""Imports run one way (DESIGN.md), read from every module's AST (imports inside functions too): no cycle among
the project's modules, none among its folders (each folder of compile/ and each module beside them counts as one
unit, so lowering <-> tuning would be one); and every direction of the data flow: `compile` imports neither
`remote` nor `results`, `remote` nothing of `compile`, `targets` only `runtime`, and `runtime` only itself, the
standard library, numpy, pillow and tvm."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("compile", "targets", "runtime", "remote", "results")
# package -> the project packages it must not import (DESIGN.md, "Data flow" and "Layout")
FORBIDDEN = {
    "compile": {"remote", "results"},
    "remote": {"compile"},
    "targets": {"compile", "remote", "results"},
    "runtime": {"compile", "targets", "remote", "results"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules a file imports, at module level or inside functions (TYPE_CHECKING ones aside)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            named = {alias.name for alias in node.names} - {m.rsplit(".", 1)[1] for m in submodules}
            found |= submodules | ({node.module} if named else set())
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _unit(module: str) -> str:
    """The folder a module belongs to: compile.<folder> for compile's folders, else its top-level package; a module
    directly in compile/ is a unit of its own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "compile" and len(parts) > 1 else parts[0]


def _folder_graph() -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for name, deps in _graph().items():
        folders.setdefault(_unit(name), set()).update(_unit(dep) for dep in deps)
    return {unit: deps - {unit} for unit, deps in folders.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None (depth-first search with an explicit path)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycle_between_modules():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_between_folders():
    graph = _folder_graph()
    assert {"compile.model", "compile.quant", "compile.graph", "compile.kernels", "compile.pipeline"} <= set(graph)
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _unit("compile.lowering.cpu") == _unit("compile.lowering") == "compile.lowering"
    assert _unit("compile.pipeline") == "compile.pipeline" and _unit("remote.power.rapl") == "remote"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_follow_the_data_flow(package):
    upward = {(name, dep) for name, deps in _graph().items() if name.split(".")[0] == package
              for dep in deps if dep.split(".")[0] in FORBIDDEN[package]}
    assert not upward, sorted(upward)


def test_runtime_imports_only_itself_and_its_dependencies():
    # cv2: video sources (optional); cryptography: runtime/signing.py's host-side keygen / sign / check
    allowed = {"numpy", "cv2", "cryptography", "runtime"} | set(sys.stdlib_module_names)
    for path in (REPO / "runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            foreign = {name.split(".")[0] for name in names} - allowed
            assert not foreign, f"{path.relative_to(REPO)} imports {foreign}"
