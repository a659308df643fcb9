"""The layer table: the format of every GEMM layer of a ViT description, which is all a precision is.

Formats today (compile.graph emits each one behind one interface, compile.graph.gemm):
- float32: a float GEMM with float nonlinearities around it (--quant fp32, and layers --keep-float keeps);
- int8: int8 x int8 -> int32, dequantized in its epilogue, float LayerNorm / softmax / GELU / residual around it
  (--quant int8);
- int8-full: the same GEMM inside the integer-only graph, where the residual stream, LayerNorm, softmax and GELU
  are integers too (--quant int8-full). Integer-only is all or nothing: every layer or none.
Layers are the description's linears by name plus each block's attention matmuls (`blocks.<i>.attention`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from compile.model.vit import ViT
from runtime.errors import EdgevitError

FLOAT32, INT8, INT8_FULL = "float32", "int8", "int8-full"
FORMATS = (FLOAT32, INT8, INT8_FULL)
MODE_FORMATS = {"fp32": FLOAT32, "int8": INT8, "int8-full": INT8_FULL}  # --quant MODE: the format of every layer


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
        return "float32" if self[vit.patch.name] == FLOAT32 else "uint8"


def layer_formats(mode: str, vit: ViT, float_layers: Iterable[str] = ()) -> LayerFormats:
    """The table of --quant `mode` for `vit`, with `float_layers` (--keep-float's choice) in float32."""
    kept = set(float_layers)
    names = vit.layer_names()
    missing = kept - set(names)
    if missing:
        raise EdgevitError(f"no layer named {', '.join(sorted(missing))} in the model")
    return LayerFormats(tuple((name, FLOAT32 if name in kept else MODE_FORMATS[mode]) for name in names))
