"""A probe process's memory as the kernel counts it (standard library only: the probe reads it before importing anything)."""

from __future__ import annotations


def status_mb(field: str, status: str = "/proc/self/status") -> float:
    """A memory field of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MiB.

    VmHWM belongs to the address space, which exec replaces; getrusage's ru_maxrss does not restart at
    exec, so a process forked from a large parent (pytest, a benchmark driver) would report the
    parent's size.
    """
    with open(status) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(f"no {field} in {status}")
