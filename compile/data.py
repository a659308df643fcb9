"""The shared data directory and its two disjoint splits of labelled images.

`$EDGEVIT_DATA`, else ../shared/data beside the repository (DESIGN.md). Its labelled images
(imagenet_val_1300: labels.csv + images/) are split once, here: the first CALIBRATION_ROWS rows
calibrate post-training quantization, the rest evaluate, so no image is scored that tuned a scale.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.evaluate import read_labels

CALIBRATION_ROWS = 256  # labels.csv rows 1..256 calibrate; rows 257.. evaluate
LABELLED_IMAGES = "imagenet_val_1300"


def data_dir() -> Path:
    """The shared data directory: $EDGEVIT_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("EDGEVIT_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def labelled_images() -> Path:
    """The folder with labels.csv (`file,label`) and images/."""
    return data_dir() / LABELLED_IMAGES


def calibration_rows(count: int) -> list[tuple[str, int]]:
    """(file, label) of the first `count` rows of the calibration split."""
    return read_labels(labelled_images() / "labels.csv", limit=min(count, CALIBRATION_ROWS))


def evaluation_rows(limit: int | None = None) -> list[tuple[str, int]]:
    """(file, label) of the evaluation split: the labels.csv rows after the calibration rows."""
    return read_labels(labelled_images() / "labels.csv", skip=CALIBRATION_ROWS, limit=limit)
