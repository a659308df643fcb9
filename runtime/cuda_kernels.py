"""Precompiled CUDA kernels: give TVM the bundle's fatbins instead of compiling source on the board.

TVM's CUDA runtime compiles a module's kernel source when the library loads, through the global
function `tvm_callback_cuda_compile(source) -> binary`. For edgevit bundles that function returns
the fatbin that `python -m compile` built with nvcc for exactly that source (by sha256).
"""

from __future__ import annotations

import ctypes
import hashlib
import re
from pathlib import Path

from runtime.errors import EdgevitError

DEVICE_DIR = "device"
FATBIN_MAGIC = bytes.fromhex("50ed55ba")  # 0xBA55ED50, little endian


def fatbin_for(bundle_dir: Path, source: str) -> bytes:
    """The bundle's fatbin for one CUDA module source."""
    path = bundle_dir / DEVICE_DIR / f"{hashlib.sha256(source.encode()).hexdigest()}.fatbin"
    if not path.is_file():
        raise EdgevitError(f"bundle {bundle_dir} has no precompiled kernel for a CUDA module (rebuild the bundle)")
    return path.read_bytes()


def use_precompiled_kernels(bundle_dir: Path) -> None:
    """Register the callback TVM's CUDA runtime calls to 'compile' kernel source at load time."""
    import tvm

    def serve(source) -> bytearray:
        return bytearray(fatbin_for(bundle_dir, str(source)))

    tvm.register_global_func("tvm_callback_cuda_compile", serve, override=True)


def load_cuda_runtime() -> None:
    """Load TVM's CUDA device API (libtvm_runtime_cuda.so, beside libtvm_runtime.so): with only the
    runtime library loaded, TVM does not load it by itself. A missing CUDA runtime it links against
    (libcudart.so.13 for the PyPI build) is named in one line instead of a loader traceback."""
    import tvm.base

    if "tvm_runtime_cuda" in tvm.base._LOADED_LIBS:
        return
    library = Path(tvm.base._LOADED_LIBS["tvm_runtime"]._name).resolve().parent / "libtvm_runtime_cuda.so"
    if not library.is_file():
        raise EdgevitError(f"this TVM has no CUDA runtime ({library.name} not found beside libtvm_runtime.so)")
    try:
        tvm.base._LOADED_LIBS["tvm_runtime_cuda"] = ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)
    except OSError as err:
        missing = re.match(r"([^:]+\.so[.\d]*): cannot open shared object file", str(err))
        needed = missing.group(1) if missing else str(err)
        raise EdgevitError(f"CUDA bundles need {needed} (linked by TVM's {library.name}; part of the NVIDIA "
                           "driver or CUDA runtime), which this machine does not have") from None
