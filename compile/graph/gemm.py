"""The GEMM formats of the layer table (compile.quant.formats), one emitter each behind one interface.

A format says what its layer reads (`input_quantization`: None for float32, else the QLinear whose int8 input
the op before it must produce) and emits x @ W + b (`dense`) in the form its numerics carries on: float32 y for
the float graphs, the int32 accumulator plus the bias in accumulator units for the integer-only graph. Adding
a format is one class here and its name in compile.quant.formats; a table that names a format without a
class here (float16: issue 26's float16 GEMM is not emitted yet) is refused by `check_emitters`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from tvm import relax

from compile.graph.emitter import Emitter
from compile.kernels import MergedHeads
from compile.model.vit import Linear
from compile.quant import integer_params as P
from compile.quant.formats import FLOAT32, INT8, INT8_FULL, W4A8, LayerFormats
from compile.quant.int4 import Int4Weight
from compile.quant.scales import QLinear, QuantizedViT
from runtime.errors import EdgevitError


class GemmFormat(Protocol):
    def input_quantization(self, layer: Linear) -> QLinear | None: ...
    def dense(self, x: relax.Expr, layer: Linear, x_view: MergedHeads | None = None) -> relax.Expr: ...


class Float32Gemm:
    """float32 x float32 with the description's weights: the GEMM rule schedules it, epilogues fused."""

    def __init__(self, em: Emitter, quant: QuantizedViT | None):
        self.em = em

    def input_quantization(self, layer: Linear) -> QLinear | None:
        return None

    def dense(self, x: relax.Expr, layer: Linear, x_view: MergedHeads | None = None) -> relax.Expr:
        em = self.em
        x = x if x_view is None else x_view.relax(em.bb, x)
        y = em.emit(relax.op.matmul(x, em.const(layer.weight)))
        return em.emit(relax.op.add(y, em.const(layer.bias)))


class Int8Gemm:
    """int8 x int8 -> int32 on the target's dot-product kernel, dequantized to float32 in its epilogue."""

    def __init__(self, em: Emitter, quant: QuantizedViT):
        self.em = em
        self.quant = quant

    def input_quantization(self, layer: Linear) -> QLinear:
        return self.quant.layer(layer.name)

    def weights(self, layer: Linear) -> tuple[QLinear, Int4Weight | None]:
        """(the QLinear the GEMM computes, its weight's int4 storage or None: int8 constants)."""
        return self.quant.layer(layer.name), None

    def dense(self, x: relax.Expr, layer: Linear, x_view: MergedHeads | None = None) -> relax.Expr:
        em, (q, int4) = self.em, self.weights(layer)
        acc = em.int8_accumulate(x, q, x_view, int4)
        y = em.emit(relax.op.multiply(em.emit(relax.op.astype(acc, "float32")), em.const(q.acc_scale)))
        return em.emit(relax.op.add(y, em.const(q.bias)))


class W4A8Gemm(Int8Gemm):
    """The int8 GEMM with the layer's int4 weight (compile.quant.int4): its widened weight (codes times group
    multipliers, one base scale per column) is an ordinary int8 weight, stored as int4 and widened in the GEMM's
    function (compile.kernels.int4_unpack); column sums and epilogue are the int8 ones."""

    def weights(self, layer: Linear) -> tuple[QLinear, Int4Weight]:
        q = self.quant.layer(layer.name)
        return dataclasses.replace(q, weight=q.int4.widened(), weight_scale=q.int4.column_scale), q.int4


class IntegerGemm(Int8Gemm):
    """The int8 GEMM of the integer-only graph: the int32 accumulator plus the bias in accumulator units."""

    def dense(self, x: relax.Expr, layer: Linear, x_view: MergedHeads | None = None) -> relax.Expr:
        em, q = self.em, self.quant.layer(layer.name)
        return em.emit(relax.op.add(em.int8_accumulate(x, q, x_view), em.const(P.bias_int(q))))


GEMMS: dict[str, type] = {FLOAT32: Float32Gemm, INT8: Int8Gemm, INT8_FULL: IntegerGemm, W4A8: W4A8Gemm}


def gemm_formats(em: Emitter, quant: QuantizedViT | None) -> dict[str, GemmFormat]:
    """An emitter of every format; a quantized one only where there are quantization parameters."""
    return {name: cls(em, quant) for name, cls in GEMMS.items() if quant is not None or name == FLOAT32}


def check_emitters(formats: LayerFormats) -> None:
    """An EdgevitError naming the first layer whose format has no emitter here (and how many more there are)."""
    missing = [(name, fmt) for name, fmt in formats.table if fmt not in GEMMS]
    if missing:
        (name, fmt), more = missing[0], f" (and {len(missing) - 1} more layers)" if len(missing) > 1 else ""
        raise EdgevitError(f"layer {name}{more}: format {fmt} has no GEMM emitter in the graph yet (it emits "
                           f"{', '.join(GEMMS)}); nothing was written")
