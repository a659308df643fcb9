"""Build: a Relax IRModule + a target preset -> model.so (a Relax VM executable as a shared library).

CPU presets are lowered by compile.lowering (the default pipeline leaves compute unscheduled), with
the preset's tuning database where it has faster schedules (compile.tuning);
CUDA presets use TVM's GPU pipeline (dlight rules) with int8 GEMMs on tensor cores and one CUDA graph
(compile.cuda_lowering), and nvcc for device code (compile.cuda).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import EdgevitError
from targets import TargetPreset

if TYPE_CHECKING:
    from compile.lowering import DumpIR


def check_toolchain(preset: TargetPreset) -> None:
    """Fail before any heavy work when the cross compiler or nvcc the preset needs is missing."""
    if preset.cross_compiler is not None and shutil.which(preset.cross_compiler) is None:
        package = "g++-" + preset.cross_compiler.removesuffix("-g++")
        raise EdgevitError(
            f"cross compiler '{preset.cross_compiler}' for target {preset.name} not found "
            f"(Debian/Ubuntu: apt-get install {package})"
        )
    if preset.device == "cuda":
        from compile.cuda import require_nvcc

        require_nvcc(preset)


def build_library(mod, preset: TargetPreset, out_path: Path, tuning_dir: Path | None = None,
                  dump: DumpIR | None = None) -> dict[str, bytes]:
    """Compile `mod` for `preset`, write the shared library to `out_path`.

    CPU presets apply the tuning database in `tuning_dir` (default: the preset's, targets/tuning/<preset>).
    `dump(phase, mod)` sees the module after each lowering phase (--dump-ir).

    The toolchain is checked once, by the caller, before any heavy work (check_toolchain).
    Returns the other files the bundle needs (CUDA presets: nvcc-compiled kernels by name).
    """
    from tvm import relax
    from tvm.support import cc

    target = preset.target()
    fcompile = cc.cross_compiler(preset.cross_compiler) if preset.cross_compiler else None
    if preset.device == "cuda":
        from compile.cuda import compile_device_code
        from compile.cuda_lowering import lower_for_cuda

        mod = lower_for_cuda(mod, target, dump)
        executable = relax.build(mod, target=target, relax_pipeline=None)
        extra_files = compile_device_code(executable, preset)
    else:
        from compile.kernels.amx import uses_amx, with_load_time_request
        from compile.lowering import lower_for_cpu
        from compile.tuning.database import database_dir, existing_database

        database = existing_database(tuning_dir or database_dir(preset))
        executable = relax.build(lower_for_cpu(mod, target, database, dump), target=target)
        extra_files = {}
        if uses_amx(target):
            fcompile = with_load_time_request(fcompile)
    executable.export_library(str(out_path), fcompile=fcompile)
    return extra_files
