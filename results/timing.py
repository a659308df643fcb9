"""Interleaved latency measurement: contenders take turns in rounds, so machine noise hits all alike.

With `shuffle_seed`, each round visits the contenders in a new random order, so none always runs
right after the same neighbour (whose caches or waking thread pool it would inherit). With
`settle_s`, each turn starts after a pause and one untimed run: thread pools that spin-wait after
their own turn (as ONNX Runtime and TVM do by default) have gone to sleep by then, so every runtime
keeps its default, fast thread pool without taking cores from the next contender.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

PER_ROUND = 5  # timed calls of each contender in each round


def interleaved_latency_ms(
    contenders: dict[str, Callable[[], None]], *, rounds: int = 10, per_round: int = PER_ROUND, warmup: int = 3, progress=None,
    shuffle_seed: int | None = None, settle_s: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Median / p90 / mean latency (ms) per contender over rounds x per_round timed calls each."""
    for run in contenders.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
    for _ in range(rounds):
        for name in names if rng is None else [names[i] for i in rng.permutation(len(names))]:
            run = contenders[name]
            if settle_s:
                time.sleep(settle_s)
                run()
            for _ in range(per_round):
                start = time.perf_counter()
                run()
                samples[name].append((time.perf_counter() - start) * 1e3)
        if progress is not None:
            progress()
    return {
        name: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(np.mean(t)),
               "n": len(t)}
        for name, t in samples.items()
    }
