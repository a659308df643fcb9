"""What this CPU is and can do, read the way the kernel reports it (works under qemu-user too): the host's side, for
detecting the host preset and for tuning. On a board the native core reads the same names (runtime/native/
cpu_features.cc) when it checks a bundle's required features.

On aarch64 the features come from AT_HWCAP / AT_HWCAP2 in /proc/self/auxv (qemu-user emulates
this file for the CPU it emulates, so `-cpu cortex-a72` really reports no dot product); on x86 from
the `flags` line of /proc/cpuinfo. Names are the kernel's /proc/cpuinfo names.
"""

from __future__ import annotations

import platform
import struct
from pathlib import Path

AT_HWCAP = 16
AT_HWCAP2 = 26

# arch/arm64/include/uapi/asm/hwcap.h
AARCH64_HWCAP = {
    0: "fp", 1: "asimd", 3: "aes", 4: "pmull", 5: "sha1", 6: "sha2", 7: "crc32", 8: "atomics",
    9: "fphp", 10: "asimdhp", 12: "asimdrdm", 13: "jscvt", 14: "fcma", 15: "lrcpc", 16: "dcpop",
    17: "sha3", 18: "sm3", 19: "sm4", 20: "asimddp", 21: "sha512", 22: "sve", 23: "asimdfhm",
}
AARCH64_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme"}


def machine_arch() -> str:
    """The CPU architecture in the names bundles use: 'x86_64' or 'aarch64'."""
    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def read_auxv(path: Path = Path("/proc/self/auxv")) -> dict[int, int]:
    """The ELF auxiliary vector of this process as {type: value} (64-bit little-endian pairs)."""
    data = path.read_bytes()
    entries = {}
    for key, value in struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]):
        if key == 0:
            break
        entries[key] = value
    return entries


def _decode_bits(value: int, names: dict[int, str]) -> set[str]:
    return {name for bit, name in names.items() if value >> bit & 1}


def aarch64_features(auxv: dict[int, int]) -> frozenset[str]:
    """Kernel feature names set in AT_HWCAP and AT_HWCAP2."""
    return frozenset(
        _decode_bits(auxv.get(AT_HWCAP, 0), AARCH64_HWCAP) | _decode_bits(auxv.get(AT_HWCAP2, 0), AARCH64_HWCAP2)
    )


def x86_features(cpuinfo: str) -> frozenset[str]:
    """The first `flags` line of /proc/cpuinfo as a set."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_features() -> frozenset[str]:
    """Feature names of the CPU this process runs on (empty if the OS does not say)."""
    arch = machine_arch()
    try:
        if arch == "aarch64":
            return aarch64_features(read_auxv())
        if arch == "x86_64":
            return x86_features(Path("/proc/cpuinfo").read_text())
    except OSError:
        pass
    return frozenset()


ARCH_REQ_XCOMP_PERM = 0x1023  # arch/x86/include/uapi/asm/prctl.h
XFEATURE_XTILEDATA = 18  # AMX tile data: Linux hands it out only to a process that asks (5.16+)
SYS_ARCH_PRCTL = 158  # x86-64 syscall number


def request_amx_tiles() -> bool:
    """Ask Linux for this process's AMX tile state; True when granted (then tile instructions run).

    Without the request the first tile instruction dies with SIGILL, whatever /proc/cpuinfo says. Model
    libraries built with AMX kernels make the same request when loaded (compile.kernels.amx); this is for
    code compiled and run in the same process (tests, tuning) and for detecting the host.
    """
    if machine_arch() != "x86_64" or not {"amx_tile", "amx_int8"} <= cpu_features():
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False
