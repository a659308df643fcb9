"""Mixed precision: which linear layers stay in float32, by their measured int8 error (MoFQ-style).

Each QLinear carries the relative squared error of its output on calibration rows with int8 input
and weights (scales.relative_error). The K worst layers (--keep-float K) and every layer above an
error threshold (--keep-float-error E) are kept in float32 (the layer table, compile.quant.formats);
the choice goes into the manifest.
"""

from __future__ import annotations

from compile.quant.config import QuantConfig
from compile.quant.formats import LayerFormats
from compile.quant.scales import QLinear


def choose_float_layers(linears: list[QLinear], config: QuantConfig) -> list[str]:
    """The names of the layers to keep in float32, worst first."""
    ranked = sorted(linears, key=lambda layer: layer.rel_error, reverse=True)
    chosen = ranked[: config.keep_float]
    if config.keep_float_error is not None:
        chosen += [layer for layer in ranked[config.keep_float:] if layer.rel_error > config.keep_float_error]
    return [layer.name for layer in chosen]


def layer_report(linears: list[QLinear], formats: LayerFormats) -> dict[str, dict]:
    """Per-layer choices for the manifest: format, relative error, input scales and channel groups."""
    report = {}
    for layer in linears:
        report[layer.name] = {
            "format": formats[layer.name],
            "rel_error": round(layer.rel_error, 8),
            "input_scales": "per-channel" if len(set(layer.input_scale.tolist())) > 1 else "per-tensor",
            "groups": [{"channels": stop - start, "shift": shift} for start, stop, shift in layer.segments],
        }
    return report
