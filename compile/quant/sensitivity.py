"""Which linear layers stay in float32, by their measured int8 error (--keep-float); the per-layer report.

Each QLinear carries the relative squared error of its output on calibration rows with int8 input
and weights (qvit.relative_error). The K worst layers (--keep-float K) and every layer above an
error threshold (--keep-float-error E) are kept in float32; the choice goes into the manifest.
"""

from __future__ import annotations

from compile.quant.config import QuantConfig
from compile.quant.qvit import QLinear


def choose_float_layers(linears: list[QLinear], config: QuantConfig) -> list[str]:
    """Run the chosen layers in float32; returns their names, worst first."""
    ranked = sorted(linears, key=lambda layer: layer.rel_error, reverse=True)
    chosen = ranked[: config.keep_float]
    if config.keep_float_error is not None:
        chosen += [layer for layer in ranked[config.keep_float:] if layer.rel_error > config.keep_float_error]
    for layer in chosen:
        layer.set_format("float32")
    return [layer.name for layer in chosen]


def layer_report(linears: list[QLinear]) -> dict[str, dict]:
    """Per-layer choices for the manifest: format, relative error, input scales and channel groups; in low-bit
    modes the error of every format, and the int4 scale group and bytes of a w4a8 layer."""
    report = {}
    for layer in linears:
        report[layer.name] = {
            "format": layer.format,
            "rel_error": round(layer.rel_error, 8),
            "input_scales": "per-channel" if len(set(layer.input_scale.tolist())) > 1 else "per-tensor",
            "groups": [{"channels": stop - start, "shift": shift} for start, stop, shift in layer.segments],
        }
        if layer.errors:
            report[layer.name]["errors"] = {fmt: round(error, 8) for fmt, error in layer.errors.items()}
        if layer.format == "w4a8":
            report[layer.name] |= {"w4_group": layer.int4.group, "weight_bytes": layer.int4.nbytes}
    return report
