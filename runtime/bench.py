"""A bench run's record: the core's latency statistics (edgevit_bench) and the facts a record carries about the
machine and the libraries the process mapped."""

from __future__ import annotations

from typing import NamedTuple


class BenchResult(NamedTuple):
    """Latency statistics of one bench run (milliseconds) and the process's peak memory (a NamedTuple: the binding
    loads no more than it needs, as bench measures the process)."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    n: int
    peak_rss_mb: float

    def to_dict(self) -> dict:
        return self._asdict()


def mapped_libraries(maps: str = "/proc/self/maps") -> list[str]:
    """The shared libraries this process has mapped, by file name, read from the kernel's view (a library loaded
    by any route counts)."""
    try:
        with open(maps) as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return []
    return sorted({path.rsplit("/", 1)[-1] for path in paths})


def mapped_tvm_libraries(maps: str = "/proc/self/maps") -> list[str]:
    """The TVM shared libraries this process has mapped (libtvm_runtime.so, libtvm_ffi.so, ...), by file name."""
    return [name for name in mapped_libraries(maps) if name.startswith("libtvm")]


def machine_facts() -> dict:
    """What a bench record needs to say about where it ran."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu part")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": cpu, "hostname": platform.node(), "python": platform.python_version()}
