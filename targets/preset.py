"""TargetPreset: what edgevit needs to know about a board, read from targets/presets/<name>.toml
(or any FILE.toml given as the target).

Each preset names its TVM target (as the dict `tvm.target.Target` takes), the cross compiler, the
CPU features a bundle built for it requires, what the runtime needs on the board and which power
sampler reads it. `host` is filled in from this machine when loaded. A preset is validated as it is
read: an unknown or missing field, a value of the wrong type or a CPU feature name the runtime
cannot detect (a misspelt one would make a bundle that requires nothing and dies of SIGILL) is an
error naming the preset and the field.
"""

from __future__ import annotations

import difflib
import os
import platform
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from runtime.errors import EdgevitError
from targets.cpu_features import AARCH64_HWCAP, AARCH64_HWCAP2, cpu_features, machine_arch

PRESET_DIR = Path(__file__).parent / "presets"

# CPU features the LLVM code for an x86 CPU may rely on, by /proc/cpuinfo name.
X86_CODEGEN_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
    "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
)
# The CPU features a preset may require, by architecture: the names the runtime reads (/proc/cpuinfo flags on
# x86, AT_HWCAP / AT_HWCAP2 bits on aarch64), so a misspelt one is refused instead of never being checked.
KNOWN_CPU_FEATURES = {
    "x86_64": frozenset(X86_CODEGEN_FEATURES) | {
        "sse", "sse2", "pni", "ssse3", "sse4_1", "popcnt", "aes", "pclmulqdq", "movbe", "bmi1", "bmi2", "abm", "adx",
        "sha_ni", "gfni", "vaes", "vpclmulqdq", "avx512cd", "avx512ifma", "avx512vbmi", "avx512_vbmi2",
        "avx512_bitalg", "avx512_vpopcntdq", "avx512_fp16", "avx512_vp2intersect", "amx_bf16", "amx_fp16",
    },
    "aarch64": frozenset(AARCH64_HWCAP.values()) | frozenset(AARCH64_HWCAP2.values()),
}
# field -> (type, required); lists hold strings
FIELDS = {
    "name": (str, True), "description": (str, True), "arch": (str, True), "tvm_target": (dict, True),
    "required_cpu_features": (list, False), "cross_compiler": (str, False), "device": (str, False),
    "runtime": (dict, False), "aliases": (list, False),
}
RUNTIME_FIELDS = {"requirements": (str, False)}
DEVICES = ("cpu", "cuda")


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


def _amx_granted(features: frozenset[str]) -> bool:
    """Whether Linux hands this CPU's AMX tile state to a process that asks (5.16 and later), found without asking:
    loading a preset changes nothing about the process (a library with AMX kernels asks when it is loaded)."""
    release = re.match(r"(\d+)\.(\d+)", platform.release())
    return {"amx_tile", "amx_int8"} <= features and release is not None and tuple(map(int, release.groups())) >= (5, 16)


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
        if _amx_granted(features):
            # KVM guests report CPU models LLVM names without AMX (rocketlake here); the int8 GEMMs then use
            # the tile unit (compile.kernels.amx), so the bundle requires it
            target["mattr"] = [*target.get("mattr", []), "+amx-tile", "+amx-int8"]
        else:
            required = [f for f in required if not f.startswith("amx")]
    else:
        required = sorted(features & {"asimd", "asimddp", "fphp", "asimdhp", "i8mm", "sve", "bf16"})
    return {**data, "arch": arch, "tvm_target": target, "required_cpu_features": required}


def _close_match(word: str, known) -> str:
    found = difflib.get_close_matches(word, sorted(known), n=1)
    return f" (did you mean '{found[0]}'?)" if found else ""


def _check_fields(data: dict[str, Any], fields: dict[str, tuple[type, bool]], where: str, prefix: str = "") -> None:
    """No unknown or missing field, each of its type (lists: of strings)."""
    for key in data:
        if key not in fields:
            raise EdgevitError(f"{where}: unknown field '{prefix}{key}'{_close_match(key, fields)}")
    for key, (kind, required) in fields.items():
        if key not in data:
            if required:
                raise EdgevitError(f"{where}: missing field '{prefix}{key}'")
            continue
        value = data[key]
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            expected = "a list of strings" if kind is list else {str: "a string", dict: "a table"}[kind]
            raise EdgevitError(f"{where}: field '{prefix}{key}' must be {expected}, got {value!r}")


def _validate(data: dict[str, Any], path: Path) -> None:
    """Refuse a preset that is not exactly what TargetPreset reads (one line naming the preset and the field)."""
    where = f"target preset {path.stem} ({path})"
    _check_fields(data, FIELDS, where)
    _check_fields(data.get("runtime", {}), RUNTIME_FIELDS, where, "runtime.")
    if data["name"] != path.stem:
        raise EdgevitError(f"{where}: field 'name' must be '{path.stem}', got '{data['name']}'")
    arches = ("detect",) if data["name"] == "host" else tuple(KNOWN_CPU_FEATURES)
    if data["arch"] not in arches:
        raise EdgevitError(f"{where}: field 'arch' must be one of {', '.join(arches)}, got '{data['arch']}'")
    device = data.get("device", "cpu")
    if device not in DEVICES:
        raise EdgevitError(f"{where}: field 'device' must be one of {', '.join(DEVICES)}, got '{device}'")
    if not isinstance(data["tvm_target"].get("kind"), str):
        raise EdgevitError(f"{where}: field 'tvm_target.kind' is missing (llvm, cuda)")
    if device == "cuda" and not isinstance(data["tvm_target"].get("host"), dict):
        raise EdgevitError(f"{where}: field 'tvm_target.host' is missing (the llvm target of the board's CPU)")
    known = KNOWN_CPU_FEATURES.get(data["arch"], frozenset())
    for feature in data.get("required_cpu_features", ()):
        if feature not in known:
            raise EdgevitError(f"{where}: field 'required_cpu_features': '{feature}' is not a CPU feature of "
                               f"{data['arch']}{_close_match(feature, known)}")


@cache
def _read(path: Path) -> dict[str, Any]:
    """A preset file's data, validated."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise EdgevitError(f"target preset {path.stem} ({path}): not valid TOML ({err})") from None
    _validate(data, path)
    return data


@cache
def _from_toml(path: Path) -> TargetPreset:
    data = _read(path)
    if data["name"] == "host":  # only when asked for: detection imports TVM
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
def _registry() -> dict[str, Path]:
    """Every shipped preset's file by its name and by its aliases (all of them validated)."""
    files = {path.stem: path for path in sorted(PRESET_DIR.glob("*.toml"))}
    for path in list(files.values()):
        for alias in _read(path).get("aliases", ()):
            files.setdefault(alias, path)
    return files


def list_presets() -> list[TargetPreset]:
    """Every preset once (aliases not repeated), in name order."""
    return [_from_toml(path) for path in sorted(set(_registry().values()))]


def preset_file(name: str) -> Path:
    """The validated file of a preset given by name, alias or path: what checking a name needs, without the
    host preset's detection (it imports TVM). An unknown name lists the known ones."""
    if name.endswith(".toml"):
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise EdgevitError(f"target preset file not found: {path}")
        _read(path)
        return path
    presets = _registry()
    if name not in presets:
        raise EdgevitError(f"unknown target '{name}'; known targets: {', '.join(sorted(presets))}")
    return presets[name]


def load_preset(name: str) -> TargetPreset:
    """A preset by name or alias, or from a FILE.toml of its own."""
    return _from_toml(preset_file(name))
