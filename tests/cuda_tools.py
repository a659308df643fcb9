"""CUDA tools the device-code tests use without a GPU: nvcc to build, cuobjdump + nvdisasm to read the SASS.

cuobjdump / nvdisasm come from PyPI (`pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`, installed under
nvidia/cu13/bin) or a CUDA toolkit on PATH; tests that need them are skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import tvm
from tvm import tirx

from compile.lowering.cuda import child_statements

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")


def _tool_dirs() -> list[str]:
    """PATH, then the bin folder of the PyPI nvidia-cuda-* wheels."""
    try:
        import nvidia

        wheels = [str(Path(p) / "cu13" / "bin") for p in nvidia.__path__]
    except ImportError:
        wheels = []
    return os.environ["PATH"].split(os.pathsep) + wheels


def _find(tool: str) -> str | None:
    return shutil.which(tool, path=os.pathsep.join(_tool_dirs()))


needs_cuobjdump = pytest.mark.skipif(
    _find("cuobjdump") is None or _find("nvdisasm") is None,
    reason="cuobjdump / nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")


def cuobjdump(*args: str | Path) -> str:
    """Output of `cuobjdump args...` (nvdisasm, which -sass needs, on its PATH)."""
    path = os.pathsep.join([str(Path(_find("nvdisasm")).parent), os.environ["PATH"]])
    result = subprocess.run([_find("cuobjdump"), *map(str, args)], capture_output=True, text=True, check=True,
                            env={**os.environ, "PATH": path})
    return result.stdout


def bundle_fatbins(bundle: Path) -> list[Path]:
    """The device code files a CUDA bundle ships (device/*.fatbin)."""
    return sorted((bundle / "device").glob("*.fatbin"))


def kernel_sass(fatbin: Path) -> dict[str, str]:
    """The SASS of each kernel in a fatbin / cubin (cuobjdump -sass): {kernel name: its instructions}."""
    parts = re.split(r"^\s*Function : (\S+)\s*$", cuobjdump("-sass", fatbin), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


@dataclass(frozen=True)
class LaunchCount:
    """What one inference of a lowered CUDA module launches: kernels in all, and how many a CUDA graph replays."""

    kernels: int  # device kernels per inference
    graph_kernels: int  # of those, inside captured CUDA graphs
    graphs: int  # graph launches per inference (vm.builtin.cuda_graph.run_or_capture)

    @property
    def launches(self) -> int:
        """Launches per inference with the graphs: the kernels outside them, plus one per graph."""
        return self.kernels - self.graph_kernels + self.graphs


def _kernels_in(stmt) -> int:
    """Device kernels under a scheduled TIR statement: its outermost blockIdx-bound loops (0 for host code)."""
    binding = getattr(stmt, "thread_binding", None)
    if isinstance(stmt, tirx.For) and binding is not None and binding.thread_tag.startswith("blockIdx"):
        return 1
    return sum(_kernels_in(child) for child in child_statements(stmt))


def count_launches(mod: tvm.IRModule) -> LaunchCount:
    """LaunchCount of `mod` after lower_for_cuda (what --dump-ir writes as 02_lowered)."""
    from tvm import relax

    builtin = tvm.ir.Op.get("relax.call_builtin_with_ctx")

    def calls(name: str) -> tuple[int, list[str]]:
        """(kernels function `name` launches itself, the graph-capture functions it runs)"""
        kernels, captures = 0, []

        def visit(expr) -> None:
            nonlocal kernels
            if not isinstance(expr, relax.Call):
                return
            if isinstance(expr.op, relax.GlobalVar) and isinstance(mod[expr.op], tirx.PrimFunc):
                kernels += _kernels_in(mod[expr.op].body)
            elif expr.op.same_as(builtin) and expr.args[0].global_symbol == "vm.builtin.cuda_graph.run_or_capture":
                captures.append(expr.args[1].fields[0].name_hint)

        relax.analysis.post_order_visit(mod[name], visit)
        return kernels, captures

    outside, captures = calls("main")
    graph_kernels = sum(calls(name)[0] for name in captures)
    return LaunchCount(kernels=outside + graph_kernels, graph_kernels=graph_kernels, graphs=len(captures))
