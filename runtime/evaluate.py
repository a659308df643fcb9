"""Top-1 / top-5 accuracy of a model over a labelled image folder (CSV `file,label`, or one sub-folder per class)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from runtime.errors import EdgevitError
from runtime.model import Model
from runtime.preprocess import Preprocess

K = TypeVar("K")


@dataclass(frozen=True)
class EvalResult:
    """Accuracy over n images; `predictions` holds each image's top-5 class indices."""

    top1: float
    top5: float
    n: int
    predictions: dict[str, list[int]]

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "predictions"}


def read_labels(csv_path: Path, *, skip: int = 0, limit: int | None = None) -> list[tuple[str, int]]:
    """Rows `file,label` of a labels CSV, after skipping `skip` rows and keeping at most `limit`."""
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
                raise EdgevitError(f"labels {csv_path}: needs a header with columns 'file,label'")
            rows = [(row["file"], int(row["label"])) for row in reader]
    except FileNotFoundError:
        raise EdgevitError(f"labels file not found: {csv_path}") from None
    except ValueError as err:
        raise EdgevitError(f"labels {csv_path}: label is not an integer ({err})") from None
    rows = rows[skip:]
    rows = rows if limit is None else rows[:limit]
    if not rows:
        raise EdgevitError(f"labels {csv_path}: no rows to evaluate (skip={skip}, limit={limit})")
    return rows


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what the core decodes


def read_class_folders(images: Path, labels: list[str], *, skip: int = 0, limit: int | None = None
                       ) -> list[tuple[str, int]]:
    """Rows `class/file, label` of an image-folder layout: one sub-folder per class, named as in `labels`
    (the bundle's labels.txt); images sorted by class index, then name; skip / limit as read_labels."""
    if not images.is_dir():
        raise EdgevitError(f"--images {images}: not a folder")
    index = {name: i for i, name in enumerate(labels)}
    folders = sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise EdgevitError(f"--images {images}: no class sub-folders in it (or give --labels CSV)")
    unknown = [p.name for p in folders if p.name not in index]
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise EdgevitError(f"--images {images}: sub-folder(s) {', '.join(repr(n) for n in unknown[:3])}{more} "
                           "name no class of the bundle's labels.txt")
    rows = [(f"{folder.name}/{file.name}", index[folder.name])
            for folder in sorted(folders, key=lambda p: index[p.name])
            for file in sorted(folder.iterdir()) if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES]
    rows = rows[skip:] if limit is None else rows[skip:skip + limit]
    if not rows:
        raise EdgevitError(f"--images {images}: no images in its class sub-folders (skip={skip}, limit={limit})")
    return rows


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


def accuracy(top5: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1, top-5) of predictions [n, 5] against labels [n]."""
    hits = top5 == np.asarray(labels)[:, None]
    return float(hits[:, 0].mean()), float(hits.any(axis=1).mean())


def evaluate(model: Model, images: Path, rows: list[tuple[str, int]], progress=None) -> EvalResult:
    """Classify every listed image once (batch 1, decoded and preprocessed by the core) and count top-1 / top-5 hits."""
    top5 = np.empty((len(rows), 5), dtype=np.int64)
    for i, (name, _) in enumerate(rows):
        top5[i] = [p.index for p in model.classify(images / name, k=5)]
        if progress is not None:
            progress()
    top1, top5_rate = accuracy(top5, np.array([label for _, label in rows]))
    predictions = {name: top.tolist() for (name, _), top in zip(rows, top5)}
    return EvalResult(top1=top1, top5=top5_rate, n=len(rows), predictions=predictions)
