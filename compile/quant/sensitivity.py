"""Which linear layers stay in float32, by their measured error (--keep-float); the per-layer report.

Each QLinear carries the relative squared error of its output on calibration rows with int8 input
and weights (scales.relative_error), and in low-bit modes its error in every format (errors). The K worst
layers, by the error of the format --quant gives them, (--keep-float K) and every layer above an
error threshold (--keep-float-error E) are kept in float32 (the layer table, compile.quant.formats);
the choice goes into the manifest.
"""

from __future__ import annotations

from compile.quant.config import QuantConfig
from compile.quant.formats import MODE_FORMATS, W4A8, LayerFormats
from compile.quant.scales import QLinear


def choose_float_layers(linears: list[QLinear], config: QuantConfig) -> list[str]:
    """The names of the layers to keep in float32, worst first."""
    error = {layer.name: layer.errors.get(MODE_FORMATS.get(config.mode), layer.rel_error) for layer in linears}
    ranked = sorted(linears, key=lambda layer: error[layer.name], reverse=True)
    chosen = ranked[: config.keep_float]
    if config.keep_float_error is not None:
        chosen += [layer for layer in ranked[config.keep_float:] if error[layer.name] > config.keep_float_error]
    return [layer.name for layer in chosen]


def layer_report(linears: list[QLinear], formats: LayerFormats) -> dict[str, dict]:
    """Per-layer choices for the manifest: format, relative error (in that format), input scales and channel
    groups; in low-bit modes the error of every format, and the int4 scale group and bytes of a w4a8 layer."""
    report = {}
    for layer in linears:
        fmt = formats[layer.name]
        report[layer.name] = {
            "format": fmt,
            "rel_error": round(layer.errors.get(fmt, layer.rel_error), 8),
            "input_scales": "per-channel" if len(set(layer.input_scale.tolist())) > 1 else "per-tensor",
            "groups": [{"channels": stop - start, "shift": shift} for start, stop, shift in layer.segments],
        }
        if layer.errors:
            report[layer.name]["errors"] = {name: round(error, 8) for name, error in layer.errors.items()}
        if fmt == W4A8:
            report[layer.name] |= {"w4_group": layer.int4.group, "weight_bytes": layer.int4.nbytes}
    return report
