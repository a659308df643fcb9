"""Build: a Relax IRModule + a target preset -> model.so (a Relax VM executable as a shared library).

CPU presets are scheduled by compile.schedule (the default pipeline leaves compute unscheduled);
CUDA presets use TVM's GPU pipeline (dlight rules) and nvcc for device code.
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


def build_library(mod, preset: TargetPreset, out_path: Path) -> None:
    """Compile `mod` for `preset` and write the shared library to `out_path`."""
    import tvm
    from tvm import relax

    target = preset.target()
    if preset.device == "cuda":
        from compile.cuda import prepare_cuda_build

        prepare_cuda_build(preset)
        executable = relax.build(mod, target=target)
    else:
        from compile.schedule import lower_for_cpu

        executable = relax.build(lower_for_cpu(mod, target), target=target)
    with tvm.transform.PassContext(opt_level=3):
        executable.export_library(str(out_path), fcompile=_cross_compiler(preset))
