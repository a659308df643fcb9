"""CUDA presets: device code compiled by nvcc into the bundle, or a clear error saying what is missing."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

from runtime.errors import EdgevitError
from targets import TargetPreset

CUDA_STUB_DIRS = ("lib64/stubs", "lib/stubs", "targets/x86_64-linux/lib/stubs")


def prepare_cuda_build(preset: TargetPreset) -> None:
    """CUDA device code is compiled by nvcc; say what is missing instead of shipping CUDA source."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise EdgevitError(
            f"target {preset.name} needs nvcc (CUDA toolkit) on this machine to compile device code; "
            "install the CUDA toolkit (e.g. pip install nvidia-cuda-nvcc) or put nvcc on PATH"
        )
    arch = preset.tvm_target.get("arch", "")
    if arch == "sm_72":
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
