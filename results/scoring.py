"""Scoring several models (bundles or other runtimes) on exactly the same inputs, for the comparisons of `results`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from runtime.preprocess import Preprocess

K = TypeVar("K")


def top5_predictions(models: Mapping[K, tuple[Callable[[np.ndarray], np.ndarray], Preprocess]], images: Path,
                     rows: list[tuple[str, int]], progress: Callable[[], None] | None = None) -> dict[K, np.ndarray]:
    """Top-5 class indices [n, 5] of every model (run, preprocess) on every listed image (batch 1).

    The models take turns on each image, and an image is read once per distinct preprocessing, so
    several bundles or runtimes are scored on exactly the same inputs in one pass.
    """
    top5 = {key: np.empty((len(rows), 5), dtype=np.int64) for key in models}
    batches = {preprocess: np.empty((1, 3, preprocess.size, preprocess.size), preprocess.dtype)
               for _, preprocess in models.values()}
    for i, (name, _) in enumerate(rows):
        for preprocess, batch in batches.items():
            preprocess.load(images / name, out=batch[0])
        for key, (run, preprocess) in models.items():
            top5[key][i] = np.argsort(-run(batches[preprocess])[0])[:5]
        if progress is not None:
            progress()
    return top5
