"""CUDA tools the device-code tests use without a GPU: nvcc to build, cuobjdump + nvdisasm to read the SASS.

cuobjdump / nvdisasm come from PyPI (`pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`, installed under
nvidia/cu13/bin) or a CUDA toolkit on PATH; tests that need them are skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")


def _tool_dirs() -> list[str]:
    """PATH, then the bin folder of the PyPI nvidia-cuda-* wheels."""
    try:
        import nvidia

        wheels = [str(Path(p) / "cu13" / "bin") for p in nvidia.__path__]
    except ImportError:
        wheels = []
    return os.environ["PATH"].split(os.pathsep) + wheels


def _find(tool: str) -> str | None:
    return shutil.which(tool, path=os.pathsep.join(_tool_dirs()))


needs_cuobjdump = pytest.mark.skipif(
    _find("cuobjdump") is None or _find("nvdisasm") is None,
    reason="cuobjdump / nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")


def cuobjdump(*args: str | Path) -> str:
    """Output of `cuobjdump args...` (nvdisasm, which -sass needs, on its PATH)."""
    path = os.pathsep.join([str(Path(_find("nvdisasm")).parent), os.environ["PATH"]])
    result = subprocess.run([_find("cuobjdump"), *map(str, args)], capture_output=True, text=True, check=True,
                            env={**os.environ, "PATH": path})
    return result.stdout


def bundle_fatbins(bundle: Path) -> list[Path]:
    """The device code files a CUDA bundle ships (device/*.fatbin)."""
    return sorted((bundle / "device").glob("*.fatbin"))


def kernel_sass(fatbin: Path) -> dict[str, str]:
    """The SASS of each kernel in a fatbin / cubin (cuobjdump -sass): {kernel name: its instructions}."""
    parts = re.split(r"^\s*Function : (\S+)\s*$", cuobjdump("-sass", fatbin), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))
