"""Imports run one way (DESIGN.md): no cycle among the project's modules, counting imports inside
functions too; `compile` imports neither `remote` nor `results`; `runtime` imports only itself, the
standard library, numpy, pillow and tvm."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.helpers import REPO

PACKAGES = ("compile", "targets", "runtime", "remote", "results")


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


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None (depth-first search with an explicit path)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
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


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_compile_imports_neither_remote_nor_results():
    upward = {(name, dep) for name, deps in _graph().items() if name.split(".")[0] == "compile"
              for dep in deps if dep.split(".")[0] in ("remote", "results")}
    assert not upward


def test_runtime_imports_only_itself_and_its_dependencies():
    # cv2: video sources (optional); cryptography: runtime/signing.py's host-side keygen / sign / check
    allowed = {"numpy", "cv2", "cryptography", "runtime"} | set(sys.stdlib_module_names)
    for path in (REPO / "runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            foreign = {name.split(".")[0] for name in names} - allowed
            assert not foreign, f"{path.relative_to(REPO)} imports {foreign}"
