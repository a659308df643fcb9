"""The GEMM formats of the layer table (compile.quant.formats), one emitter each behind one interface.

A format says what its layer reads (`input_quantization`: None for float32, else the QLinear whose int8 input
the op before it must produce) and emits x @ W + b (`dense`) in the form its numerics carries on: float32 y for
the float graphs, the int32 accumulator plus the bias in accumulator units for the integer-only graph. Adding
a format is one class here and its name in compile.quant.formats; a table that names a format without a
class here (w4a8: issue 26's GEMM is not emitted yet) is refused by `check_emitters`.
"""

from __future__ import annotations

from typing import Protocol

from tvm import relax

from compile.graph.emitter import Emitter
from compile.kernels import MergedHeads
from compile.model.vit import Linear
from compile.quant import integer_params as P
from compile.quant.formats import FLOAT16, FLOAT32, INT8, INT8_FULL, LayerFormats
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

    def dense(self, x: relax.Expr, layer: Linear, x_view: MergedHeads | None = None) -> relax.Expr:
        em, q = self.em, self.quant.layer(layer.name)
        acc = em.int8_accumulate(x, q, x_view)
        y = em.emit(relax.op.multiply(em.emit(relax.op.astype(acc, "float32")), em.const(q.acc_scale)))
        return em.emit(relax.op.add(y, em.const(q.bias)))


class IntegerGemm(Int8Gemm):
    """The int8 GEMM of the integer-only graph: the int32 accumulator plus the bias in accumulator units."""

    def dense(self, x: relax.Expr, layer: Linear, x_view: MergedHeads | None = None) -> relax.Expr:
        em, q = self.em, self.quant.layer(layer.name)
        return em.emit(relax.op.add(em.int8_accumulate(x, q, x_view), em.const(P.bias_int(q))))


GEMMS: dict[str, type] = {FLOAT32: Float32Gemm, FLOAT16: Float16Gemm, INT8: Int8Gemm, INT8_FULL: IntegerGemm}


def gemm_formats(em: Emitter, quant: QuantizedViT | None) -> dict[str, GemmFormat]:
    """An emitter of every format; a quantized one only where there are quantization parameters."""
    return {name: cls(em, quant) for name, cls in GEMMS.items() if quant is not None or name in (FLOAT32, FLOAT16)}


def check_emitters(formats: LayerFormats) -> None:
    """An EdgevitError naming the first layer whose format has no emitter here (and how many more there are)."""
    missing = [(name, fmt) for name, fmt in formats.table if fmt not in GEMMS]
    if missing:
        (name, fmt), more = missing[0], f" (and {len(missing) - 1} more layers)" if len(missing) > 1 else ""
        raise EdgevitError(f"layer {name}{more}: format {fmt} has no GEMM emitter in the graph yet (it emits "
                           f"{', '.join(GEMMS)}); nothing was written")


def emitted_formats(offered: tuple[str, ...], named: tuple[str, ...] | None) -> tuple[str, ...]:
    """What --quant mixed may choose from: the `offered` formats the graph emits. One that --formats names without
    an emitter is an EdgevitError before calibration; unnamed ones are left out (w4a8 until its emitter lands)."""
    for fmt in named or ():
        if fmt not in GEMMS:
            raise EdgevitError(f"--formats {fmt}: format {fmt} has no GEMM emitter in the graph yet (it emits "
                               f"{', '.join(GEMMS)}); nothing was written")
    return tuple(fmt for fmt in offered if fmt in GEMMS)
