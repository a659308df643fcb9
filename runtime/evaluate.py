"""Top-1 / top-5 accuracy of a model over a labelled image folder (CSV `file,label`, or one sub-folder per class)."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runtime.errors import EdgevitError
from runtime.model import Model


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
