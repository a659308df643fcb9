"""The CUDA device of `results bench --device cuda`: whether there is one, what it is, which preset fits it.

A GPU record says what it ran on: name, compute capability, driver, CUDA versions and clocks. nvidia-smi
knows the most (current and maximum clocks); where it is missing, PyTorch's device properties and then TVM's
device attributes fill in what they know, and what no source knows stays None.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

from runtime.errors import EdgevitError

SMI_FIELDS = {  # nvidia-smi --query-gpu field -> record key
    "name": "gpu", "compute_cap": "compute_capability", "driver_version": "driver_version",
    "clocks.sm": "sm_clock_mhz", "clocks.max.sm": "max_sm_clock_mhz", "clocks.mem": "mem_clock_mhz",
    "clocks.max.mem": "max_mem_clock_mhz", "memory.total": "memory_mib", "power.limit": "power_limit_w",
}
FACT_KEYS = (*SMI_FIELDS.values(), "cuda_driver", "cuda_runtime_torch", "facts_from")
FALLBACK_TARGET = "cuda-sm80"


def cuda_problem() -> str | None:
    """Why this machine has no usable CUDA device for the benchmark, None when it has one (TVM or PyTorch sees it)."""
    import tvm

    if tvm.cuda(0).exist:
        return None
    import torch

    if torch.cuda.is_available():
        return None
    build = "a CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
    return f"TVM's tvm.cuda(0) does not exist and torch.cuda.is_available() is False (torch {torch.__version__}, {build})"


def require_cuda() -> None:
    """Refuse `--device cuda` on a machine without a GPU, before anything is prepared or written."""
    problem = cuda_problem()
    if problem is not None:
        raise EdgevitError(f"no CUDA device: {problem}")


def parse_nvidia_smi(line: str) -> dict:
    """One line of `nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits` as record fields
    ('[N/A]' and '[Not Supported]' become None, numbers become numbers)."""
    values = [v.strip() for v in line.split(",")]
    if len(values) != len(SMI_FIELDS):
        raise ValueError(f"expected {len(SMI_FIELDS)} fields from nvidia-smi, got {len(values)}: {line!r}")
    facts = {}
    for key, value in zip(SMI_FIELDS.values(), values):
        if value.startswith("[") or not value:
            facts[key] = None
        elif key in ("gpu", "driver_version", "compute_capability"):
            facts[key] = value
        else:
            facts[key] = float(value)
    return facts


def _nvidia_smi() -> dict:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {}
    try:
        out = subprocess.run([smi, "-i", "0", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return parse_nvidia_smi(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {}


def _torch() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(0)
    facts = {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
             "memory_mib": props.total_memory / 2**20}
    clock_khz = getattr(props, "clock_rate", None)  # not in every torch release
    if clock_khz:
        facts["max_sm_clock_mhz"] = clock_khz / 1e3
    return facts


def _tvm() -> dict:
    import tvm

    device = tvm.cuda(0)
    if not device.exist:
        return {}
    return {"gpu": device.device_name, "compute_capability": device.compute_version,
            "max_sm_clock_mhz": device.max_clock_rate / 1e3, "memory_mib": device.total_global_memory / 2**20}


def _cuda_driver() -> str | None:
    """The newest CUDA version the installed driver supports (libcuda's cuDriverGetVersion), None without one."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def gpu_facts() -> dict:
    """Every key of FACT_KEYS: what nvidia-smi, PyTorch and TVM tell of GPU 0, in that order of trust;
    `facts_from` names the sources that answered."""
    import torch

    facts: dict = dict.fromkeys(FACT_KEYS)
    sources = []
    for source, read in (("nvidia-smi", _nvidia_smi), ("torch", _torch), ("tvm", _tvm)):
        found = read()
        if found:
            sources.append(source)
        for key, value in found.items():
            if facts[key] is None:
                facts[key] = value
    facts["cuda_driver"] = _cuda_driver()
    facts["cuda_runtime_torch"] = torch.version.cuda
    facts["facts_from"] = ", ".join(sources) or "none"
    return facts


def default_cuda_target(compute_capability: str | None) -> str:
    """The CUDA preset of this machine's architecture for a compute capability ("9.0" on x86-64 -> cuda-sm90,
    "8.7" on aarch64 -> a Jetson Orin preset); FALLBACK_TARGET when there is none for it or it is unknown."""
    from targets import list_presets
    from targets.cpu_features import machine_arch

    if compute_capability:
        arch = "sm_" + compute_capability.replace(".", "")
        for preset in list_presets():
            if preset.device == "cuda" and preset.arch == machine_arch() and preset.tvm_target["arch"] == arch:
                return preset.name
    return FALLBACK_TARGET
