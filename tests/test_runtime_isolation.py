"""The runtime is what goes onto a board: it may import only numpy (and OpenCV, optionally, for video sources) and the
stdlib; the native core does the rest. No module imports tvm."""

import ast
import json
import sys
from pathlib import Path

from runtime.bench import mapped_tvm_libraries
from tests.helpers import REPO, run_module

ALLOWED_THIRD_PARTY = {"numpy", "cv2"}
HOST_SIDE = {"cryptography"}  # runtime/signing.py's keygen / sign / check, run on the host: imported inside them only


def _imported_top_level(path: Path, module_level: bool = False) -> set[str]:
    names = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_imports_only_its_dependencies():
    for path in (REPO / "runtime").rglob("*.py"):
        foreign = _imported_top_level(path) - ALLOWED_THIRD_PARTY - HOST_SIDE - {"runtime"} - set(sys.stdlib_module_names)
        assert not foreign, f"{path.name} imports {foreign}"
        assert not _imported_top_level(path, module_level=True) & HOST_SIDE, f"{path.name} imports {HOST_SIDE} on load"


def test_runtime_requirements_are_small():
    reqs = [line.split("=")[0].split(">")[0]
            for line in (REPO / "runtime" / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert set(reqs) == {"numpy"}


def test_runtime_maps_only_the_tvm_runtime_library(int8_bundle):
    """`python -m runtime` loads the bundle's libtvm_runtime.so through its core, never the ~250 MB
    libtvm_compiler.so (read from the process's own /proc/self/maps at the end of a bench run)."""
    result = run_module("runtime", "bench", int8_bundle, "--warmup", "1", "--repeat", "2", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"peak RSS {record['peak_rss_mb']:.1f} MB, libraries {record['tvm_libraries']}")
    assert record["runtime"] == "python"
    assert "libtvm_runtime.so" in record["tvm_libraries"]
    assert not any("compiler" in name for name in record["tvm_libraries"]), record["tvm_libraries"]


def test_mapped_libraries_are_read_from_proc_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f10 r-xp 00000000 08:01 1 /opt/tvm/lib/libtvm_runtime.so\n"
        "7f10-7f20 r--p 00000000 08:01 2 /opt/tvm/lib/libtvm_compiler.so\n"
        "7f20-7f30 r-xp 00000000 08:01 3 /usr/lib/libc.so.6\n"
        "7f30-7f40 rw-p 00000000 00:00 0 \n"
    )
    assert mapped_tvm_libraries(str(maps)) == ["libtvm_compiler.so", "libtvm_runtime.so"]
