"""quantize: a ViT description and its timm model -> the parameters of every quantized layer and the layer table."""

from __future__ import annotations

from collections.abc import Callable

from compile.model.vit import ViT
from compile.quant.calibration import calibrate
from compile.quant.config import QuantConfig
from compile.quant.formats import FLOAT32, INT8, W4A8, LayerFormats, layer_formats, weight_bytes
from compile.quant.scales import QuantizedViT, degenerate_sites, quantize_vit
from compile.quant.sensitivity import choose_float_layers


def quantize(model, vit: ViT, spec, config: QuantConfig, log: Callable[[str], None] = print,
             offered: tuple[str, ...] | None = None) -> tuple[QuantizedViT, LayerFormats]:
    """Calibrate `model` (the float timm ViT `vit` describes, left unchanged) on real images with vit's ToMe
    schedule, quantize every layer, and choose the layers kept in float32 (--keep-float), or with --quant mixed
    each layer's format among `offered` (what the target runs, compile.quant.formats.offered_formats; None:
    float32, int8 and w4a8)."""
    stats = calibrate(model, spec, [block.tome_r for block in vit.blocks], config, log)
    for note in degenerate_sites(stats):
        log(f"      note: {note} in calibration; it gets a stand-in scale")
    qvit = quantize_vit(vit, stats, config)
    if config.mode == "mixed":
        return _choose_formats(model, spec, config, qvit, offered or (FLOAT32, INT8, W4A8), log)
    if config.mode == W4A8:
        int8_mb = sum(weight_bytes(INT8, *linear.weight.shape, 0) for linear in qvit.linears()) / 1e6
        log(f"      w4a8 ({config.w4_rounding}, group {config.w4_group or 'per column'}): "
            f"{sum(linear.int4.nbytes for linear in qvit.linears()) / 1e6:.2f} MB of GEMM weights and scales "
            f"(int8: {int8_mb:.2f} MB)")
    kept = choose_float_layers(qvit.linears(), config)
    if kept:
        log(f"      kept in float32: {', '.join(kept)}")
    formats = layer_formats(config.mode, qvit.vit, kept)
    if config.w4_rounding == "block":
        qvit = _learn_block_rounding(model, spec, config, qvit, formats, log)
    return qvit, formats


def _learn_block_rounding(model, spec, config: QuantConfig, qvit: QuantizedViT, formats: LayerFormats,
                          log) -> QuantizedViT:
    """--w4-rounding block: GPTQ's codes, then each block's learned on the calibration images
    (compile.quant.block_rounding), on the model without ToMe (the weights are the same)."""
    from rich.progress import Progress

    from compile.quant.block_rounding import STEPS, learn_block_rounding
    from compile.quant.calibration import calibration_split, load_images

    images = load_images(calibration_split(config).fit, spec.preprocess())
    with Progress(transient=True) as progress:
        task = progress.add_task("learning each block's int4 rounding", total=STEPS * len(qvit.blocks))
        qvit = learn_block_rounding(model, qvit, formats, images, lambda: progress.advance(task))
    errors = qvit.recipe["block_rounding"]["block_output_mse"]
    log("      block rounding: block output error vs GPTQ " + " ".join(
        f"{e['learned'] / e['gptq']:.2f}" if e["kept"] else "kept-gptq" for e in errors))
    return qvit


def _choose_formats(model, spec, config: QuantConfig, qvit: QuantizedViT, offered: tuple[str, ...],
                    log) -> tuple[QuantizedViT, LayerFormats]:
    """--quant mixed: each GEMM's format, measured on the held-out calibration images (compile.quant.mofq); the
    choice goes into the recipe the manifest records."""
    import copy
    import dataclasses

    from compile.model.tome_patch import apply_tome
    from compile.quant.calibration import calibration_split, load_images
    from compile.quant.mofq import choose_formats

    split = calibration_split(config)
    schedule = [block.tome_r for block in qvit.vit.blocks]
    running = apply_tome(copy.deepcopy(model), schedule) if any(schedule) else model
    formats, summary = choose_formats(running, qvit, config, offered, load_images(split.heldout, spec.preprocess()),
                                      split.heldout_labels, log)
    return dataclasses.replace(qvit, recipe={**qvit.recipe, "choice": summary}), formats
