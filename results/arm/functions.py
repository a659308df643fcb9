"""Counting single Relax functions (a GEMM, a row kernel) on the emulated board: what each of their kernels executes.

The functions are lowered as compile lowers a model (compile.lowering.cpu: fusion, hand schedules), built for a
board preset, and called by the board's python through TVM's runtime library alone (no compiler), each once
to warm up and once inside a window. A function's count is that of the TIR kernels it calls (their symbols
in the library), so the VM's and python's own instructions stay out.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from results.arm.count import CLASSES, MARK_SYSCALL, InferenceCount, run_counted
from results.arm.symbols import OUTLINED, AddressMap

LIBRARY = "functions.so"
RUN = f"""
import ctypes, sys, numpy as np, tvm
from tvm.runtime.vm import VirtualMachine
vm = VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())
mark = ctypes.CDLL(None).syscall
outputs = {{}}
with np.load(sys.argv[2]) as saved:
    for name in sys.argv[4:]:
        args = [tvm.runtime.tensor(saved[key]) for key in sorted(k for k in saved.files if k.startswith(name + "/"))]
        function = vm[name]
        function(*args)
        mark({MARK_SYSCALL}, 1)
        result = function(*args)
        mark({MARK_SYSCALL}, 2)
        outputs[name] = result.numpy()
np.savez(sys.argv[3], **outputs)
"""


@dataclass(frozen=True)
class FunctionCount:
    """Instructions of one Relax function's call: its TIR kernels, by class."""

    name: str
    kernels: dict[str, int]  # instructions of each TIR function it calls
    instructions: int
    classes: dict[str, int]


def kernel_base(symbol: str) -> str:
    """The TIR function a symbol of a TVM library belongs to (its FFI wrapper, body, outlined parallel loops)."""
    return symbol.removesuffix(OUTLINED).removeprefix("__tvm_ffi_").removesuffix("_compute_")


def _called_kernels(lowered, name: str) -> set[str]:
    from tvm import relax, tirx

    called = set()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call):
            for arg in (expr.op, *expr.args):
                if isinstance(arg, relax.GlobalVar) and isinstance(lowered[arg], tirx.PrimFunc):
                    called.add(arg.name_hint)

    relax.analysis.post_order_visit(lowered[name], visit)
    return called


def count_functions(module, inputs: dict[str, list[np.ndarray]], preset_name: str, root: Path, cpu: str,
                    work_dir: Path | None = None) -> tuple[dict[str, FunctionCount], dict[str, np.ndarray], InferenceCount]:
    """Count each Relax function of `module` named in `inputs` (its arguments) on the board: per function,
    its outputs, and the whole count (all windows) for a look at every symbol."""
    from tvm import relax
    from tvm.support import cc

    from compile.lowering.cpu import fuse_for_cpu, schedule_for_cpu
    from results.arm.sysroot import PYTHON
    from targets import load_preset

    preset = load_preset(preset_name)
    target = preset.target()
    lowered = schedule_for_cpu(fuse_for_cpu(module, target), target)
    with tempfile.TemporaryDirectory(prefix="edgevit-arm-functions-", dir=work_dir) as tmp:
        folder = Path(tmp)
        library = folder / LIBRARY
        relax.build(lowered, target=target).export_library(str(library), fcompile=cc.cross_compiler(preset.cross_compiler))
        np.savez(folder / "inputs.npz", **{f"{name}/{i:03d}": a for name, args in inputs.items() for i, a in enumerate(args)})
        report, _ = run_counted([str(root / PYTHON.lstrip("/")), "-c", RUN, str(library), str(folder / "inputs.npz"),
                                 str(folder / "outputs.npz"), *inputs], cpu=cpu, sysroot=root,
                                env={"TVM_NUM_THREADS": "1", "TVM_USE_RUNTIME_LIB": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        with np.load(folder / "outputs.npz") as saved:
            outputs = {name: saved[name] for name in saved.files}
        if report.windows != len(inputs):
            raise RuntimeError(f"{len(inputs)} functions ran in {report.windows} windows")
        count = InferenceCount.from_report(report, AddressMap(report.mappings, root))  # per window; x windows: per call
    by_kernel: dict[str, Counter] = {}
    for kernel in count.kernels:
        if kernel.library == LIBRARY:
            by_kernel.setdefault(kernel_base(kernel.name), Counter()).update(kernel.classes)
    counts = {}
    for name in inputs:
        kernels = sorted(_called_kernels(lowered, name))
        classes = sum((by_kernel.get(k, Counter()) for k in kernels), Counter())
        per_call = {c: round(classes[c] * report.windows) for c in CLASSES}
        per_kernel = {k: round(sum(by_kernel.get(k, Counter()).values()) * report.windows) for k in kernels}
        counts[name] = FunctionCount(name, per_kernel, sum(per_call.values()), per_call)
    return counts, outputs, count
