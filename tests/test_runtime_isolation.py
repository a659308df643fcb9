"""The runtime is what goes onto a board: it may import only numpy, pillow, TVM and the stdlib."""

import ast
import sys
from pathlib import Path

from tests.helpers import REPO

ALLOWED_THIRD_PARTY = {"numpy", "PIL", "tvm"}


def _imported_top_level(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_imports_only_its_dependencies():
    for path in (REPO / "runtime").rglob("*.py"):
        foreign = _imported_top_level(path) - ALLOWED_THIRD_PARTY - {"runtime"} - set(sys.stdlib_module_names)
        assert not foreign, f"{path.name} imports {foreign}"


def test_runtime_requirements_are_small():
    reqs = [line.split("=")[0].split(">")[0]
            for line in (REPO / "runtime" / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert set(reqs) == {"numpy", "pillow", "apache-tvm", "apache-tvm-ffi"}
