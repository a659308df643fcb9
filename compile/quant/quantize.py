"""quantize: a ViT description and its timm model -> the parameters of every quantized layer and the layer table."""

from __future__ import annotations

from collections.abc import Callable

from compile.model.vit import ViT
from compile.quant.calibration import calibrate
from compile.quant.config import QuantConfig
from compile.quant.formats import LayerFormats, layer_formats
from compile.quant.scales import QuantizedViT, degenerate_sites, quantize_vit
from compile.quant.sensitivity import choose_float_layers


def quantize(model, vit: ViT, spec, config: QuantConfig,
             log: Callable[[str], None] = print) -> tuple[QuantizedViT, LayerFormats]:
    """Calibrate `model` (the float timm ViT `vit` describes, left unchanged) on real images with vit's ToMe
    schedule, quantize every layer, and choose the layers kept in float32 (--keep-float)."""
    stats = calibrate(model, spec, [block.tome_r for block in vit.blocks], config, log)
    for note in degenerate_sites(stats):
        log(f"      note: {note} in calibration; it gets a stand-in scale")
    qvit = quantize_vit(vit, stats, config)
    kept = choose_float_layers(qvit.linears(), config)
    if kept:
        log(f"      kept in float32: {', '.join(kept)}")
    return qvit, layer_formats(config.mode, qvit.vit, kept)
