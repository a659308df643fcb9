"""TargetPreset: what edgevit needs to know about a board, read from targets/presets/<name>.toml.

Each preset names its TVM target (as the dict `tvm.target.Target` takes), the cross compiler, the
CPU features a bundle built for it requires, what the runtime needs on the board and which power
sampler reads it. `host` is filled in from this machine when loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from runtime.errors import EdgevitError
from targets.cpu_features import cpu_features, machine_arch, request_amx_tiles

PRESET_DIR = Path(__file__).parent / "presets"
POWER_SAMPLERS = ("none", "rapl", "ina3221", "tegrastats", "vcgencmd", "external")

# CPU features the LLVM code for an x86 CPU may rely on, by /proc/cpuinfo name.
X86_CODEGEN_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
    "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
)


@dataclass(frozen=True)
class TargetPreset:
    """A board: how to compile for it and what it must offer to run the result."""

    name: str
    description: str
    arch: str  # "x86_64" | "aarch64"
    tvm_target: dict[str, Any]
    required_cpu_features: tuple[str, ...] = ()
    cross_compiler: str | None = None  # None: the host's own compiler
    device: str = "cpu"  # "cpu" | "cuda"
    runtime_requirements: str = ""
    aliases: tuple[str, ...] = field(default=())

    def target(self):
        """The tvm.target.Target for this preset."""
        import tvm

        return tvm.target.Target(self.tvm_target)

    @property
    def cpu_target(self) -> dict[str, Any]:
        """The llvm target that runs on the board's CPU (the host part of a CUDA target)."""
        return self.tvm_target.get("host", self.tvm_target) if self.device == "cuda" else self.tvm_target


def _detect_host(data: dict[str, Any]) -> dict[str, Any]:
    """Fill the host preset from this machine: LLVM's name for the CPU, cores, and features."""
    from tvm.target import codegen

    arch = machine_arch()
    features = cpu_features()
    target = dict(data["tvm_target"])
    target["mcpu"] = codegen.llvm_get_system_cpu()
    target["mtriple"] = f"{arch}-linux-gnu"
    target["num-cores"] = len(os.sched_getaffinity(0))
    if arch == "x86_64":
        required = [f for f in X86_CODEGEN_FEATURES if f in features]
        if "avx512f" in features and not target["mcpu"].startswith("znver"):
            # LLVM's Intel AVX-512 models prefer 256-bit vectors (older Xeons clock down on 512-bit code); the
            # int8 GEMMs run 512-bit VNNI anyway, so the vectorized loops go 512-bit too: on a Xeon with AMX,
            # softmax 61 -> 47 us, LayerNorm 12 -> 8.3 us, int8-full's softmax 129 -> 90 us (DeiT-tiny rows)
            target["mattr"] = ["-prefer-256-bit"]
        if request_amx_tiles():
            # KVM guests report CPU models LLVM names without AMX (rocketlake here); the int8 GEMMs then use
            # the tile unit (compile.kernels.amx), so the bundle requires it
            target["mattr"] = [*target.get("mattr", []), "+amx-tile", "+amx-int8"]
        else:
            required = [f for f in required if not f.startswith("amx")]
    else:
        required = sorted(features & {"asimd", "asimddp", "fphp", "asimdhp", "i8mm", "sve", "bf16"})
    return {**data, "arch": arch, "tvm_target": target, "required_cpu_features": required}


def _from_toml(path: Path) -> TargetPreset:
    data = tomllib.loads(path.read_text())
    if data.get("name") != path.stem:
        raise EdgevitError(f"target preset {path}: 'name' must be '{path.stem}'")
    if data["name"] == "host":
        data = _detect_host(data)
    runtime = data.get("runtime", {})
    return TargetPreset(
        name=data["name"],
        description=data["description"],
        arch=data["arch"],
        tvm_target=data["tvm_target"],
        required_cpu_features=tuple(data.get("required_cpu_features", ())),
        cross_compiler=data.get("cross_compiler"),
        device=data.get("device", "cpu"),
        runtime_requirements=runtime.get("requirements", ""),
        aliases=tuple(data.get("aliases", ())),
    )


@cache
def _registry() -> dict[str, TargetPreset]:
    presets = {p.stem: _from_toml(p) for p in sorted(PRESET_DIR.glob("*.toml"))}
    for preset in list(presets.values()):
        for alias in preset.aliases:
            presets.setdefault(alias, preset)
    return presets


def list_presets() -> list[TargetPreset]:
    """Every preset once (aliases not repeated), in name order."""
    return sorted({p.name: p for p in _registry().values()}.values(), key=lambda p: p.name)


def load_preset(name: str) -> TargetPreset:
    """A preset by name or alias; an unknown name lists the known ones."""
    presets = _registry()
    if name not in presets:
        raise EdgevitError(f"unknown target '{name}'; known targets: {', '.join(sorted(presets))}")
    return presets[name]
