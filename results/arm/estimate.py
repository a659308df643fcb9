"""Latency on the real board from instruction counts: per function, the tightest throughput bound of its mix.

A function's cycles are the largest of: its instructions over the core's decode width, each class over
the pipelines that execute it, the FP / ASIMD classes together over the vector pipelines, loads and
stores together over the address generators (results/arm/boards.py cites the figures). Functions run
one after another, so an inference's cycles are the sum over functions. This assumes no stall: no
cache miss, dependency chain or mispredicted branch, so it is a lower bound on the time; its error
against figures measured on real boards is reported with every run (results/arm/report.py).

More threads divide the functions that run in parallel (`parallel`: the contender's own knowledge of
which of its functions a thread pool splits), the rest stays serial (Amdahl); pool start and join are
not modelled.
"""

from __future__ import annotations

from collections.abc import Callable

from results.arm.boards import VECTOR, ArmBoard, CoreModel
from results.arm.count import InferenceCount, Kernel

THREADS = (1, 4)


def kernel_cycles(classes: dict[str, float], core: CoreModel) -> float:
    """Cycles of an instruction mix on `core`: the tightest of its throughput bounds."""
    bounds = [sum(classes.values()) / core.decode_per_cycle,
              sum(classes.get(c, 0.0) for c in VECTOR) / core.vector_per_cycle,
              (classes.get("load", 0.0) + classes.get("store", 0.0)) / core.memory_per_cycle]
    for cls, count in classes.items():
        if count:
            rate = core.per_cycle[cls]
            if rate <= 0:
                raise ValueError(f"{core.name} cannot execute '{cls}' instructions")
            bounds.append(count / rate)
    return max(bounds)


def estimated_ms(count: InferenceCount, board: ArmBoard, parallel: Callable[[Kernel], bool],
                 threads: tuple[int, ...] = THREADS) -> dict[int, float]:
    """Estimated milliseconds per inference on `board` for each thread count (at most its cores)."""
    serial = split = 0.0
    for kernel in count.kernels:
        cycles = kernel_cycles(kernel.classes, board.core)
        if parallel(kernel):
            split += cycles
        else:
            serial += cycles
    cycles_per_ms = board.clock_ghz * 1e6
    return {n: (serial + split / min(n, board.cores)) / cycles_per_ms for n in threads}
