"""CUDA presets: compile the kernels of a built module with nvcc into fatbins shipped in the bundle.

TVM 0.27's compiler leaves CUDA kernels as source inside the exported library; its CUDA runtime
compiles them when the library is loaded (NVRTC through cuda-python on the board). edgevit compiles
them here instead, with nvcc for the preset's arch, and ships one `device/<sha256 of source>.fatbin`
per CUDA module; the runtime hands those to TVM at load time (runtime/cuda_kernels.py), so a board
needs neither a compiler nor NVRTC, and a kernel that does not compile fails the build, not the board.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass

from runtime.cuda_kernels import DEVICE_DIR, FATBIN_MAGIC
from runtime.errors import EdgevitError
from targets import TargetPreset


def require_nvcc(preset: TargetPreset) -> str:
    """Path of an nvcc that supports the preset's arch, or a clear error naming what is missing."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise EdgevitError(
            f"target {preset.name} needs nvcc (CUDA toolkit) on PATH to compile its kernels; "
            "install the CUDA toolkit (e.g. pip install nvidia-cuda-nvcc) or build on a machine that has it"
        )
    arch = preset.tvm_target["arch"].removeprefix("sm_")
    listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout
    if f"compute_{arch}" not in listed:
        raise EdgevitError(
            f"target {preset.name} needs sm_{arch}, which {nvcc} does not support "
            f"(CUDA 12.9+ dropped sm_72 / Xavier); use an nvcc that lists compute_{arch} (e.g. CUDA <= 12.8)"
        )
    return nvcc


def _cuda_modules(module) -> list:
    """Every imported module of kind 'cuda', depth first."""
    found = []
    for child in module.imports:
        if child.kind == "cuda":
            found.append(child)
        found.extend(_cuda_modules(child))
    return found


def compile_device_code(executable, preset: TargetPreset) -> dict[str, bytes]:
    """nvcc-compiled fatbins for every CUDA module of `executable`: {bundle file name: bytes}."""
    import tvm
    from tvm.support import nvcc

    files = {}
    with tvm.target.Target(preset.tvm_target):
        for module in _cuda_modules(executable.mod):
            source = str(module.inspect_source(""))
            try:
                fatbin = bytes(nvcc.compile_cuda(source, target_format="fatbin", compiler="nvcc"))
            except RuntimeError as err:
                raise EdgevitError(f"nvcc failed on a generated kernel for {preset.name}: {str(err).splitlines()[0]}") from None
            if fatbin[:4] != FATBIN_MAGIC:
                raise EdgevitError(f"nvcc did not produce a fatbin for {preset.name}")
            files[f"{DEVICE_DIR}/{hashlib.sha256(source.encode()).hexdigest()}.fatbin"] = fatbin
    if not files:
        raise EdgevitError(f"the build for {preset.name} produced no CUDA kernels")
    return files


@dataclass(frozen=True)
class LaunchCount:
    """What one inference of a lowered CUDA module launches: kernels in all, and how many of them a CUDA graph replays."""

    kernels: int  # device kernels per inference
    graph_kernels: int  # of those, inside captured CUDA graphs
    graphs: int  # graph launches per inference (vm.builtin.cuda_graph.run_or_capture)

    @property
    def launches(self) -> int:
        """Launches per inference with the graphs: the kernels outside them, plus one per graph."""
        return self.kernels - self.graph_kernels + self.graphs


def _kernels_in(stmt) -> int:
    """Device kernels under a scheduled TIR statement: its outermost blockIdx-bound loops (0 for host code)."""
    from tvm import tirx

    if isinstance(stmt, tirx.For) and stmt.thread_binding is not None \
            and stmt.thread_binding.thread_tag.startswith("blockIdx"):
        return 1
    if isinstance(stmt, tirx.SeqStmt):
        return sum(_kernels_in(child) for child in stmt.seq)
    children = (getattr(stmt, name, None) for name in ("body", "block", "then_case", "else_case"))
    return sum(_kernels_in(child) for child in children if isinstance(child, tirx.Stmt))


def count_launches(mod) -> LaunchCount:
    """LaunchCount of `mod` after the CUDA pipeline (what --dump-ir writes as 02_lowered)."""
    import tvm
    from tvm import relax, tirx

    builtin = tvm.ir.Op.get("relax.call_builtin_with_ctx")

    def calls(name: str) -> tuple[int, list[str]]:
        """(kernels `name` launches itself, the graph-capture functions it runs)"""
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
