"""The layer table: the format of every GEMM layer of a ViT description, which is all a precision is.

Formats today (compile.graph emits each one behind one interface, compile.graph.gemm):
- float32: a float GEMM with float nonlinearities around it (--quant fp32, and layers --keep-float keeps);
- int8: int8 x int8 -> int32, dequantized in its epilogue, float LayerNorm / softmax / GELU / residual around it
  (--quant int8);
- int8-full: the same GEMM inside the integer-only graph, where the residual stream, LayerNorm, softmax and GELU
  are integers too (--quant int8-full). Integer-only is all or nothing: every layer or none;
- w4a8: int8 GEMMs with int4 weights (compile.quant.int4), per output channel or per group of input rows
  (--quant w4a8, and --quant mixed's choice);
- float16: float16 inputs and weights, accumulated in float16 (--quant mixed's choice where the target computes in
  float16: check_target_formats refuses it elsewhere).
Layers are the description's linears by name plus each block's attention matmuls (`blocks.<i>.attention`).
A format's bytes are those of a GEMM weight in it, scales included (biases, embeddings and norms stay
float32 in every format).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from compile.model.vit import ViT
from compile.quant.int4 import packed_bytes
from runtime.errors import EdgevitError

if TYPE_CHECKING:
    from compile.quant.config import QuantConfig
    from targets.preset import TargetPreset

FLOAT32, FLOAT16, INT8, INT8_FULL, W4A8 = "float32", "float16", "int8", "int8-full", "w4a8"
FORMATS = (FLOAT32, FLOAT16, INT8, INT8_FULL, W4A8)
MIXED_FORMATS = (FLOAT32, FLOAT16, INT8, W4A8)  # what --quant mixed chooses from, per linear layer
MODE_FORMATS = {"fp32": FLOAT32, "int8": INT8, "int8-full": INT8_FULL, "w4a8": W4A8}  # --quant MODE: every linear's
ATTENTION_FORMATS = {FLOAT32: FLOAT32, INT8: INT8, INT8_FULL: INT8_FULL, W4A8: INT8}  # and its attention matmuls'
FP16_CPU_FEATURES = {"fphp", "asimdhp"}  # ARMv8.2 half-precision scalar and vector arithmetic (rpi5's A76)


@dataclass(frozen=True)
class LayerFormats:
    """layer name -> format, for every GEMM layer of one description (validated when made)."""

    table: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        unknown = sorted({fmt for _, fmt in self.table} - set(FORMATS))
        if unknown:
            raise EdgevitError(f"unknown layer format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
        integer = {fmt == INT8_FULL for _, fmt in self.table}
        if len(integer) > 1:
            raise EdgevitError("int8-full is integer only: every layer or none (no float layers beside it)")

    def __getitem__(self, name: str) -> str:
        return dict(self.table)[name]

    @property
    def integer_only(self) -> bool:
        return any(fmt == INT8_FULL for _, fmt in self.table)

    def input_dtype(self, vit: ViT) -> str:
        """What the model takes: uint8 pixels where the patch embedding is quantized (mean / std folded into it),
        else normalized float32 pixels."""
        return "float32" if self[vit.patch.name] in (FLOAT32, FLOAT16) else "uint8"


def layer_formats(mode: str, vit: ViT, float_layers: Iterable[str] = ()) -> LayerFormats:
    """The table of --quant `mode` for `vit`, with `float_layers` (--keep-float's choice) in float32."""
    kept = set(float_layers)
    missing = kept - {linear.name for linear in vit.linears()}
    if missing:
        raise EdgevitError(f"no layer named {', '.join(sorted(missing))} in the model")
    fmt = MODE_FORMATS[mode]
    return chosen_formats(vit, {linear.name: FLOAT32 if linear.name in kept else fmt for linear in vit.linears()},
                          ATTENTION_FORMATS[fmt])


def chosen_formats(vit: ViT, linears: Mapping[str, str], attention: str) -> LayerFormats:
    """The table with each linear layer in its format of `linears` and every attention matmul in `attention`."""
    return LayerFormats(tuple((name, linears.get(name, attention)) for name in vit.layer_names()))


def weight_bytes(fmt: str, rows: int, columns: int, group: int) -> int:
    """Bytes of a [rows, columns] GEMM weight in `fmt`, scales included (group: the int4 scale group, 0 = column)."""
    if fmt == FLOAT32:
        return 4 * rows * columns
    if fmt == FLOAT16:
        return 2 * rows * columns
    if fmt == W4A8:
        return packed_bytes(rows, columns, group)
    return rows * columns + 4 * columns


def computes_fp16(preset: TargetPreset) -> bool:
    return preset.device == "cuda" or FP16_CPU_FEATURES <= set(preset.required_cpu_features)


def target_formats(preset: TargetPreset) -> tuple[str, ...]:
    """The formats --quant mixed may give a layer on `preset`: all but float16 where it has no float16 arithmetic."""
    return tuple(fmt for fmt in MIXED_FORMATS if fmt != FLOAT16 or computes_fp16(preset))


def check_target_formats(formats: LayerFormats, preset: TargetPreset) -> None:
    """An EdgevitError naming the first layer of the table whose format `preset` cannot compute in (float16 without
    half-precision arithmetic), however the table was made."""
    for name, fmt in formats.table:
        if fmt == FLOAT16 and not computes_fp16(preset):
            raise EdgevitError(f"layer {name}: format float16 needs half-precision arithmetic, which target "
                               f"{preset.name} does not have (fphp / asimdhp, or CUDA); nothing was written")


def offered_formats(config: QuantConfig, preset: TargetPreset) -> tuple[str, ...]:
    """What --quant mixed may choose from: --formats, or every format the target runs; a named format the target
    cannot run is an error."""
    runs = target_formats(preset)
    for fmt in config.formats or ():
        if fmt not in runs:
            from targets import list_presets

            able = [p.name for p in list_presets() if fmt in target_formats(p)]
            raise EdgevitError(f"--formats {fmt}: target {preset.name} does not compute in {fmt} "
                               f"(targets that do: {', '.join(able)})")
    return tuple(fmt for fmt in runs if config.formats is None or fmt in config.formats)
