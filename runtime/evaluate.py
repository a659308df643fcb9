"""Top-1 / top-5 accuracy of a session over a labelled image folder (CSV `file,label`)."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from runtime.errors import EdgevitError
from runtime.preprocess import Preprocess
from runtime.session import InferenceSession


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


def evaluate(session: InferenceSession, images: Path, rows: list[tuple[str, int]], progress=None) -> EvalResult:
    """Run every listed image once (batch 1) and count top-1 / top-5 hits."""
    preprocess = Preprocess.from_manifest(session.bundle.manifest["input"])
    batch = session.new_batch()
    hits1 = hits5 = 0
    predictions = {}
    for name, label in rows:
        preprocess.load(images / name, out=batch[0])
        top5 = np.argsort(-session.run(batch)[0])[:5].tolist()
        predictions[name] = top5
        hits1 += top5[0] == label
        hits5 += label in top5
        if progress is not None:
            progress()
    n = len(rows)
    return EvalResult(top1=hits1 / n, top5=hits5 / n, n=n, predictions=predictions)
