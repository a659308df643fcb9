"""CUDA presets: compile the kernels of a built module with nvcc into fatbins shipped in the bundle.

TVM 0.27's compiler leaves CUDA kernels as source inside the exported library; its CUDA runtime
compiles them when the library is loaded (NVRTC through cuda-python on the board). edgevit compiles
them here instead, with nvcc for the preset's arch, and ships one `device/<sha256 of source>.fatbin`
per CUDA module; the native core hands those to TVM at load time (runtime/native/edgevit.cc), so a board
needs neither a compiler nor NVRTC, and a kernel that does not compile fails the build, not the board.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess

from runtime.errors import EdgevitError
from targets import TargetPreset

DEVICE_DIR = "device"
FATBIN_MAGIC = bytes.fromhex("50ed55ba")  # 0xBA55ED50, little endian


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
