"""The GEMM formats of the layer table (compile.quant.formats), one emitter each behind one interface.

A format says what its layer reads (`input_quantization`: None for float32, else the QLinear whose int8 input
the op before it must produce) and emits x @ W + b (`dense`) in the form its numerics carries on: float32 y for
the float graphs, the int32 accumulator plus the bias in accumulator units for the integer-only graph. Adding
a format is one class here and its name in compile.quant.formats.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from tvm import relax

from compile.graph.emitter import Emitter, int4_operand
from compile.kernels import MergedHeads
from compile.model.vit import Linear
from compile.quant import integer_params as P
from compile.quant.formats import FLOAT16, FLOAT32, INT8, INT8_FULL, W4A8
from compile.quant.int4 import Int4Weight
from compile.quant.scales import QLinear, QuantizedViT


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
        return em.emit(relax.op.add(self.product(x, layer), em.const(layer.bias)))

    def product(self, x: relax.Expr, layer: Linear) -> relax.Expr:
        """x @ W in float32."""
        return self.em.emit(relax.op.matmul(x, self.em.const(layer.weight)))


class Float16Gemm(Float32Gemm):
    """float16 x float16 on the target's half-precision arithmetic (rpi5's A76: fmla v.8h; CUDA: half FMA): x rounded
    to float16, the description's weight as a float16 constant, the products ACCUMULATED IN FLOAT16 in k order (one
    fused multiply-add, one rounding, per term on the A76), the result widened to float32 before the bias. Its error
    grows with K (each step rounds to 11 bits): the rounding bound is gamma_K * sum_k |x_k w_k|, gamma_K = K u / (1 -
    K u), u = 2^-11, beside the inputs' own rounding to float16 (tests/test_float16_gemm.py)."""

    def product(self, x: relax.Expr, layer: Linear) -> relax.Expr:
        em = self.em
        half = em.emit(relax.op.astype(x, "float16"))
        y = em.emit(relax.op.matmul(half, em.const(layer.weight, "float16"), out_dtype="float16"))
        return em.emit(relax.op.astype(y, "float32"))


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
        widened = int4_operand(q.int4, 0, q.int4.rows).widened()
        return dataclasses.replace(q, weight=widened, weight_scale=q.int4.column_scale), q.int4


class IntegerGemm(Int8Gemm):
    """The int8 GEMM of the integer-only graph: the int32 accumulator plus the bias in accumulator units."""

    def dense(self, x: relax.Expr, layer: Linear, x_view: MergedHeads | None = None) -> relax.Expr:
        em, q = self.em, self.quant.layer(layer.name)
        return em.emit(relax.op.add(em.int8_accumulate(x, q, x_view), em.const(P.bias_int(q))))


GEMMS: dict[str, type] = {FLOAT32: Float32Gemm, FLOAT16: Float16Gemm, INT8: Int8Gemm, INT8_FULL: IntegerGemm,
                          W4A8: W4A8Gemm}


def gemm_formats(em: Emitter, quant: QuantizedViT | None) -> dict[str, GemmFormat]:
    """An emitter of every format; a quantized one only where there are quantization parameters."""
    return {name: cls(em, quant) for name, cls in GEMMS.items() if quant is not None or name in (FLOAT32, FLOAT16)}

