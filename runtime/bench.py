"""The on-device latency loop: fixed input, warm-up, timed repeats, statistics and peak RSS."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from runtime.memory import peak_rss_mb
from runtime.session import InferenceSession


@dataclass(frozen=True)
class BenchResult:
    """Latency statistics of one bench run (milliseconds) and the process's peak memory."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    n: int
    peak_rss_mb: float
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def bench(session: InferenceSession, *, warmup: int, repeat: int, threads: int) -> BenchResult:
    """Time `repeat` batch-1 inferences after `warmup` untimed ones, waiting for the device each time."""
    batch = session.example_batch()
    for _ in range(warmup):
        session.run_device(batch)
    session.device.sync()
    times_ms = np.empty(repeat, dtype=np.float64)
    for i in range(repeat):
        start = time.perf_counter()
        session.run_device(batch)
        session.device.sync()
        times_ms[i] = (time.perf_counter() - start) * 1e3
    return BenchResult(
        median_ms=float(np.median(times_ms)),
        p90_ms=float(np.percentile(times_ms, 90)),
        p99_ms=float(np.percentile(times_ms, 99)),
        mean_ms=float(times_ms.mean()),
        min_ms=float(times_ms.min()),
        n=repeat,
        peak_rss_mb=peak_rss_mb(),
        threads=threads,
    )


def mapped_tvm_libraries(maps: str = "/proc/self/maps") -> list[str]:
    """The TVM shared libraries this process has mapped (libtvm_runtime.so, libtvm_ffi.so, ...), by file name.

    Read from the kernel's view rather than TVM's bookkeeping, so a library loaded by any route counts.
    """
    try:
        with open(maps) as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return []
    return sorted({path.rsplit("/", 1)[-1] for path in paths if path.rsplit("/", 1)[-1].startswith("libtvm")})


def machine_facts() -> dict:
    """What a bench record needs to say about where it ran."""
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
