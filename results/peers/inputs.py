"""What every contender is fed: the timm model's float32 input transform and the calibration images.

Peers that calibrate (ONNX Runtime static, PT2E for ExecuTorch and LiteRT) get the very images
edgevit's own calibration reads (the calibration split of compile.data, picked by
compile.quant.calibration), preprocessed the same way, so no contender is tuned on an image it is
scored on. compile.quant.calibration needs torch: it is imported only where calibration happens,
so loading a contender (results.peers.runners) stays free of it.
"""

from __future__ import annotations

import numpy as np

from runtime.preprocess import Preprocess


def model_preprocess(model: str) -> Preprocess:
    """The float32 input transform of a timm model (what the FP32 bundle's manifest records)."""
    from compile.model.models import model_spec

    return model_spec(model).preprocess()


def calibration_batches(preprocess: Preprocess, count: int) -> list[np.ndarray]:
    """The first `count` calibration images, as edgevit's compile picks them, each a batch [1, 3, H, W]."""
    from compile.quant.calibration import calibration_files, load_images
    from compile.quant.config import QuantConfig

    files = calibration_files(QuantConfig(calib_count=count))
    return list(load_images(files, preprocess)[:, None])
