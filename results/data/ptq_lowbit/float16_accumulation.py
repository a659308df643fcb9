"""DeiT-tiny top-1 with every GEMM in float16 accumulated in float16 (compile.graph.gemm.Float16Gemm's numerics, as
the torch simulation compile.quant.format_error.half_accumulated rounds them), attention and everything else
float32, beside the same simulation with float32 GEMMs, on the first N images of the evaluation split.

    python results/data/ptq_lowbit/float16_accumulation.py [N]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from compile.data import evaluation_rows, labelled_images
from compile.model.models import load_model, model_spec
from compile.model.vit import describe
from compile.quant.calibration import load_images
from compile.quant.config import QuantConfig
from compile.quant.quantize import quantize
from compile.quant.simulate import simulated_model

MODEL = "deit_tiny_patch16_224"


def main(limit: int | None) -> None:
    torch.set_num_threads(1)
    model, spec = load_model(MODEL).eval(), model_spec(MODEL)
    vit = describe(model, [0] * len(model.blocks), spec.mean, spec.std)
    qvit, _ = quantize(model, vit, spec, QuantConfig(mode="int8", calib_count=16), log=lambda _: None)  # biases only
    rows = evaluation_rows(limit)
    labels = np.array([label for _, label in rows])
    images = load_images([labelled_images() / "images" / name for name, _ in rows], spec.preprocess())
    for fmt in ("float32", "float16"):
        sim = simulated_model(model, qvit, {linear.name: fmt for linear in qvit.linears()}, quantizer=None)
        with torch.inference_mode():
            top1 = np.concatenate([sim(torch.from_numpy(images[i:i + 16])).argmax(-1).numpy()
                                   for i in range(0, len(images), 16)])
        print(f"{fmt} GEMMs: top-1 {100 * (top1 == labels).mean():.2f}% on {len(rows)} images", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
