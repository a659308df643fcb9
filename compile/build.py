"""Build: a Relax IRModule + a target preset -> model.so (a Relax VM executable as a shared library).

CPU presets are scheduled by compile.schedule (the default pipeline leaves compute unscheduled);
CUDA presets use TVM's GPU pipeline (dlight rules) and nvcc for device code.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

from runtime.errors import EdgevitError
from targets import TargetPreset

CUDA_STUB_DIRS = ("lib64/stubs", "lib/stubs", "targets/x86_64-linux/lib/stubs")


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


def _require_nvcc(preset: TargetPreset) -> None:
    """CUDA device code is compiled by nvcc; say what is missing instead of shipping CUDA source."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise EdgevitError(
            f"target {preset.name} needs nvcc (CUDA toolkit) on this machine to compile device code; "
            "install the CUDA toolkit (e.g. pip install nvidia-cuda-nvcc) or put nvcc on PATH"
        )
    arch = preset.tvm_target.get("arch", "")
    if arch == "sm_72":
        import subprocess

        listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout
        if "compute_72" not in listed:
            raise EdgevitError(
                f"target {preset.name} needs sm_72, which this nvcc no longer supports "
                "(CUDA 12.9+ dropped Volta/Xavier); use an nvcc <= 12.x, e.g. on the board (JetPack 5)"
            )
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    _load_libcuda(Path(nvcc).resolve().parent.parent)


def _load_libcuda(cuda_home: Path) -> None:
    """TVM's nvcc path loads libcuda.so.1 even without a GPU; the toolkit's stub library suffices."""
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        return
    except OSError:
        pass
    for stub_dir in CUDA_STUB_DIRS:
        stub = cuda_home / stub_dir / "libcuda.so"
        if stub.is_file():
            ctypes.CDLL(str(stub), mode=ctypes.RTLD_GLOBAL)
            return


def build_library(mod, preset: TargetPreset, out_path: Path) -> None:
    """Compile `mod` for `preset` and write the shared library to `out_path`."""
    import tvm
    from tvm import relax

    target = preset.target()
    if preset.device == "cuda":
        _require_nvcc(preset)
        executable = relax.build(mod, target=target)
    else:
        from compile.schedule import lower_for_cpu

        executable = relax.build(lower_for_cpu(mod, target), target=target)
    with tvm.transform.PassContext(opt_level=3):
        executable.export_library(str(out_path), fcompile=_cross_compiler(preset))
