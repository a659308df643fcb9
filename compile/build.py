"""Build: a Relax IRModule + a target preset -> model.so (a Relax VM executable as a shared library).

CPU presets are scheduled by compile.schedule (the default pipeline leaves compute unscheduled), with
the preset's tuning database where it has faster schedules (compile.tuning);
CUDA presets use TVM's GPU pipeline (dlight rules) and nvcc for device code (compile.cuda).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.errors import EdgevitError
from targets import TargetPreset


def _cross_compiler(preset: TargetPreset):
    """The fcompile for export_library: the preset's cross compiler, checked to exist."""
    if preset.cross_compiler is None:
        return None
    from tvm.support import cc

    if shutil.which(preset.cross_compiler) is None:
        package = "g++-" + preset.cross_compiler.removesuffix("-g++")
        raise EdgevitError(
            f"cross compiler '{preset.cross_compiler}' for target {preset.name} not found "
            f"(Debian/Ubuntu: apt-get install {package})"
        )
    return cc.cross_compiler(preset.cross_compiler)


def check_toolchain(preset: TargetPreset) -> None:
    """Fail before any heavy work when the cross compiler or nvcc the preset needs is missing."""
    _cross_compiler(preset)
    if preset.device == "cuda":
        from compile.cuda import require_nvcc

        require_nvcc(preset)


def build_library(mod, preset: TargetPreset, out_path: Path, tuning_dir: Path | None = None) -> dict[str, bytes]:
    """Compile `mod` for `preset`, write the shared library to `out_path`.

    CPU presets apply the tuning database in `tuning_dir` (default: the preset's, targets/tuning/<preset>).

    Returns the other files the bundle needs (CUDA presets: nvcc-compiled kernels by name).
    """
    from tvm import relax

    check_toolchain(preset)
    target = preset.target()
    fcompile = _cross_compiler(preset)
    if preset.device == "cuda":
        from compile.cuda import compile_device_code

        executable = relax.build(mod, target=target)
        extra_files = compile_device_code(executable, preset)
    else:
        from compile.schedule import lower_for_cpu
        from compile.tuning.database import database_dir, existing_database

        database = existing_database(tuning_dir or database_dir(preset))
        executable = relax.build(lower_for_cpu(mod, target, database), target=target)
        extra_files = {}
    executable.export_library(str(out_path), fcompile=fcompile)
    return extra_files
