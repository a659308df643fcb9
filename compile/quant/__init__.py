"""Post-training quantization into integer arithmetic (no retraining).

    calibrate (real images, float model incl. ToMe) -> statistics per activation
    -> QuantizedViT: per-channel int8 weights, static activation scales, outlier channel handling,
       per-layer sensitivity and the float-kept layers          (qvit.py, observers.py, weights.py)
    -> w4a8 / mixed: int4 weights by GPTQ or round-to-nearest against each GEMM input's X^T X, the error of
       every layer format, and mixed's choice of a format per GEMM under a budget, estimated on held-out
       calibration images                 (int4.py, gptq.py, hessian.py, layer_formats.py, formats.py,
                                           simulate.py, accuracy_proxy.py, mofq.py)
    -> Relax graph with int8 x int8 -> int32 matmuls, dequantization delayed past them and
       requantization fused into their epilogues                  (graph.py + float/integer numerics)
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from compile.quant.config import QuantConfig
from runtime.errors import EdgevitError

if TYPE_CHECKING:
    from compile.quant.qvit import QuantizedViT


_STATS_CACHE: dict[tuple, dict] = {}  # one calibration per model / schedule / image set in a process


def calibrate(model, spec, schedule: list[int], config: QuantConfig, log: Callable[[str], None] = print) -> dict:
    """Statistics of every activation to quantize, from the float model (ToMe-patched copy) on real images.

    They do not depend on the recipe (observer, outliers, groups, ...), so a process that builds several
    recipes of one model (python -m results ptq) calibrates once.
    """
    from rich.progress import Progress

    from compile.quant.calibration import calibration_split, collect_stats, load_images
    from compile.tome_patch import apply_tome

    files = calibration_split(config).fit
    key = (spec.name, _weights_digest(model), tuple(schedule), tuple(map(str, files)))
    cached = _STATS_CACHE.get(key)
    if cached is not None and (not config.low_bit or any(site.gram is not None for site in cached.values())):
        return cached
    preprocess = spec.preprocess()
    calibrated = copy.deepcopy(model)
    if any(schedule):
        apply_tome(calibrated, schedule)
    log(f"      calibrating on {len(files)} images")
    with Progress(transient=True) as progress:
        task = progress.add_task("loading calibration images", total=len(files))
        images = load_images(files, preprocess, lambda: progress.advance(task))
        task = progress.add_task("calibrating (2 passes)", total=2 * -(-len(images) // 32))
        stats = collect_stats(calibrated, images, progress=lambda: progress.advance(task), grams=config.low_bit)
    _STATS_CACHE[key] = stats
    return stats


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def quantize(model, spec, schedule: list[int], config: QuantConfig, log: Callable[[str], None] = print,
             formats: tuple[str, ...] = ("float32", "int8", "w4a8")) -> QuantizedViT:
    """Calibrate `model` (a float timm ViT, left unchanged) on real images and quantize it; --quant mixed chooses
    each GEMM's format among `formats` (what the target runs, compile.quant.formats.offered_formats)."""
    from compile.quant.qvit import degenerate_sites, quantize_vit
    from compile.quant.sensitivity import choose_float_layers

    stats = calibrate(model, spec, schedule, config, log)
    for note in degenerate_sites(stats):
        log(f"      note: {note} in calibration; it gets a stand-in scale")
    qvit = quantize_vit(model, stats, config, schedule, spec.mean, spec.std)
    if config.mode == "mixed":
        qvit.recipe["choice"] = _choose_formats(model, spec, schedule, config, qvit, formats, log)
    elif config.mode == "w4a8":
        from compile.quant.formats import weight_bytes

        int8_mb = sum(weight_bytes("int8", *linear.weight.shape, 0) for linear in qvit.linears()) / 1e6
        log(f"      w4a8 ({config.w4_rounding}, group {config.w4_group or 'per column'}): "
            f"{sum(linear.int4.nbytes for linear in qvit.linears()) / 1e6:.2f} MB of GEMM weights and scales "
            f"(int8: {int8_mb:.2f} MB)")
    kept = choose_float_layers(qvit.linears(), config)
    if kept:
        log(f"      kept in float32: {', '.join(kept)}")
    return qvit


def _choose_formats(model, spec, schedule, config: QuantConfig, qvit: QuantizedViT, formats, log) -> dict:
    """--quant mixed: each GEMM's format, measured on the held-out calibration images (compile.quant.mofq)."""
    from compile.quant.calibration import calibration_split, load_images
    from compile.quant.mofq import choose_formats
    from compile.tome_patch import apply_tome

    split = calibration_split(config)
    running = apply_tome(copy.deepcopy(model), schedule) if any(schedule) else model
    return choose_formats(running, qvit, config, formats, load_images(split.heldout, spec.preprocess()),
                          split.heldout_labels, log)


def emit_relax(qvit: QuantizedViT, target):
    """The Relax module of a QuantizedViT for `target` (int8 or int8-full numerics)."""
    from compile.quant.config import LOW_BIT_MODES

    if qvit.mode in LOW_BIT_MODES:  # part 2 of issue 26 wires int4 / float16 GEMMs into the one graph
        raise EdgevitError(f"--quant {qvit.mode}: the graph emitter for 4-bit and float16 GEMMs is not there yet "
                           "(quantization above is done; nothing was written); compile --quant int8 meanwhile")
    from compile.quant.graph import emit_quantized_vit

    if qvit.mode == "int8-full":
        from compile.quant.integer_numerics import IntegerNumerics as numerics
    else:
        from compile.quant.float_numerics import FloatNumerics as numerics
    return emit_quantized_vit(qvit, numerics, target)
