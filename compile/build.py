"""Lower and build: the emitted Relax module + a target preset -> model.so (a Relax VM executable as a library).

CPU presets are lowered by compile.lowering.cpu (the default pipeline leaves compute unscheduled), with
the preset's tuning database where it has faster schedules (compile.tuning);
CUDA presets use TVM's GPU pipeline (dlight rules) with int8 GEMMs on tensor cores and one CUDA graph
(compile.lowering.cuda), and nvcc for device code (compile.cuda).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from compile.tuning.settings import TuneSettings
from runtime.errors import EdgevitError
from targets import TargetPreset

if TYPE_CHECKING:
    import tvm

    from compile.lowering.cpu import DumpIR


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


def lower(mod, preset: TargetPreset, tuning: TuneSettings, dump: DumpIR, log) -> tvm.IRModule:
    """The emitted graph lowered for `preset`: CPU presets fuse, tune when asked (--tune: the kernels of this module,
    added to the preset's database), apply the tuning database and schedule (compile.lowering.cpu); CUDA presets
    run TVM's GPU pipeline (compile.lowering.cuda). `dump(phase, mod)` sees each phase (--dump-ir)."""
    target = preset.target()
    if tuning.trials:
        from compile.tuning.tune import refuse_untunable

        refuse_untunable(preset)
    if preset.device == "cuda":
        from compile.lowering.cuda import lower_for_cuda

        return lower_for_cuda(mod, target, dump)
    from compile.lowering.cpu import fuse_for_cpu, schedule_for_cpu
    from compile.tuning.database import database_dir, existing_database

    fused = fuse_for_cpu(mod, target)
    dump("fused", fused)
    if tuning.trials:
        from compile.tuning.tune import tune_model

        tune_model(fused, preset, tuning, log=log)
    database = existing_database(tuning.database_dir or database_dir(preset))
    return schedule_for_cpu(fused, target, database, dump)


def build_library(lowered, preset: TargetPreset, out_path: Path) -> dict[str, bytes]:
    """Build the lowered module for `preset` and write the shared library to `out_path`.

    The toolchain is checked once, by the caller, before any heavy work (check_toolchain).
    Returns the other files the bundle needs (CUDA presets: nvcc-compiled kernels by name).
    """
    from tvm import relax
    from tvm.support import cc

    target = preset.target()
    fcompile = cc.cross_compiler(preset.cross_compiler) if preset.cross_compiler else None
    if preset.device == "cuda":
        from compile.cuda import compile_device_code

        executable = relax.build(lowered, target=target, relax_pipeline=None)
        extra_files = compile_device_code(executable, preset)
    else:
        from compile.kernels.amx import uses_amx, with_load_time_request

        executable = relax.build(lowered, target=target)
        extra_files = {}
        if uses_amx(target):
            fcompile = with_load_time_request(fcompile)
    executable.export_library(str(out_path), fcompile=fcompile)
    return extra_files
