"""The on-device latency loop: fixed input, warm-up, timed repeats, statistics and peak RSS."""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import asdict, dataclass

import numpy as np

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


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
