"""Post-training quantization into integer arithmetic (no retraining).

    calibrate (real images, float model incl. ToMe) -> statistics per activation
    -> QuantizedViT: per-channel int8 weights, static activation scales, outlier channel handling,
       per-layer sensitivity and the float-kept layers          (qvit.py, observers.py, weights.py)
    -> Relax graph with int8 x int8 -> int32 matmuls, dequantization delayed past them and
       requantization fused into their epilogues                  (graph.py + float/integer numerics)
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from compile.quant.config import QuantConfig

if TYPE_CHECKING:
    from compile.quant.qvit import QuantizedViT


_STATS_CACHE: dict[tuple, dict] = {}  # one calibration per model / schedule / image set in a process


def calibrate(model, spec, schedule: list[int], config: QuantConfig, log: Callable[[str], None] = print) -> dict:
    """Statistics of every activation to quantize, from the float model (ToMe-patched copy) on real images.

    They do not depend on the recipe (observer, outliers, groups, ...), so a process that builds several
    recipes of one model (python -m results ptq) calibrates once.
    """
    from rich.progress import Progress

    from compile.quant.calibration import calibration_files, collect_stats, load_images
    from compile.tome_patch import apply_tome

    files = calibration_files(config)
    key = (spec.name, _weights_digest(model), tuple(schedule), tuple(map(str, files)))
    if key in _STATS_CACHE:
        return _STATS_CACHE[key]
    preprocess = spec.preprocess()
    calibrated = copy.deepcopy(model)
    if any(schedule):
        apply_tome(calibrated, schedule)
    log(f"      calibrating on {len(files)} images")
    with Progress(transient=True) as progress:
        task = progress.add_task("loading calibration images", total=len(files))
        images = load_images(files, preprocess, lambda: progress.advance(task))
        task = progress.add_task("calibrating (2 passes)", total=2 * -(-len(images) // 32))
        stats = collect_stats(calibrated, images, progress=lambda: progress.advance(task))
    _STATS_CACHE[key] = stats
    return stats


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def quantize(model, spec, schedule: list[int], config: QuantConfig, log: Callable[[str], None] = print) -> QuantizedViT:
    """Calibrate `model` (a float timm ViT, left unchanged) on real images and quantize it."""
    from compile.quant.qvit import degenerate_sites, quantize_vit
    from compile.quant.sensitivity import choose_float_layers

    stats = calibrate(model, spec, schedule, config, log)
    for note in degenerate_sites(stats):
        log(f"      note: {note} in calibration; it gets a stand-in scale")
    qvit = quantize_vit(model, stats, config, schedule, spec.mean, spec.std)
    kept = choose_float_layers(qvit.linears(), config)
    if kept:
        log(f"      kept in float32: {', '.join(kept)}")
    return qvit


def emit_relax(qvit: QuantizedViT, target):
    """The Relax module of a QuantizedViT for `target` (int8 or int8-full numerics)."""
    from compile.quant.graph import emit_quantized_vit

    if qvit.mode == "int8-full":
        from compile.quant.integer_numerics import IntegerNumerics as numerics
    else:
        from compile.quant.float_numerics import FloatNumerics as numerics
    return emit_quantized_vit(qvit, numerics, target)
