"""The two splits of the shared images: calibration (labels.csv rows 1..256) and evaluation (the rest).

Peers that calibrate (ONNX Runtime static, PT2E for ExecuTorch and LiteRT) get the very images
edgevit's own calibration reads (compile.quant.calibration), preprocessed the same way, so no
contender is tuned on an image it is scored on. compile.quant needs torch: it is imported only
where calibration happens, so loading a contender (results.runners) stays free of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.preprocess import Preprocess


def images_dir() -> Path:
    """The shared labelled images (labels.csv + images/)."""
    from compile.models import data_dir

    return data_dir() / "imagenet_val_1300"


def model_preprocess(model: str) -> Preprocess:
    """The float32 input transform of a timm model (what the FP32 bundle's manifest records)."""
    from compile.models import model_spec

    spec = model_spec(model)
    return Preprocess(spec.image_size, int(spec.image_size / spec.crop_pct), spec.mean, spec.std, spec.interpolation)


def calibration_batches(preprocess: Preprocess, count: int) -> list[np.ndarray]:
    """The first `count` calibration images, as edgevit's compile picks them, each a batch [1, 3, H, W]."""
    from compile.models import data_dir
    from compile.quant.calibration import (
        CALIBRATION_ROWS,
        calibration_files,
        load_images,
    )
    from compile.quant.config import QuantConfig

    files = calibration_files(QuantConfig(calib_count=count), data_dir(), CALIBRATION_ROWS)
    return list(load_images(files, preprocess)[:, None])


def evaluation_rows(limit: int | None) -> list[tuple[str, int]]:
    """(file, label) of the evaluation split: labels.csv rows after the calibration rows."""
    from compile.quant.calibration import CALIBRATION_ROWS
    from runtime.evaluate import read_labels

    return read_labels(images_dir() / "labels.csv", skip=CALIBRATION_ROWS, limit=limit)
