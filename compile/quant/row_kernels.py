"""int8-full's LayerNorm and softmax on CPUs as one hand-written TIR kernel each, a row at a time.

As Relax op chains they were 7 (LayerNorm) and 4 (softmax) kernels with int64 intermediates of the
full tensor between them, and the integer square root a separate serial kernel: int8-full ran at
2.6x int8's latency (DeiT-tiny, results/data/bench_int8_full). Here each row's statistics stay in
registers: LayerNorm reads its row three times (sum, variance, output), softmax three times (max,
sum of 2^-u, output; recomputing 2^-u costs less than a row of scratch); the row loop is parallel,
the column loops are plain for LLVM to vectorize. The steps are exactly those of
compile.quant.integer_numerics (the numpy reference in tests/integer_reference.py checks them bit
for bit). CUDA targets keep the op chains, which dlight spreads over threads; one thread per row
would serialize them.

A row's scalars live in one int64 local buffer: an int32 and an int64 local buffer side by side in
one block gave wrong results with TVM 0.27 (its storage rewrite merges them).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from compile.quant import integer_params as P
from compile.quant.integer_ops import OPAQUE, isqrt_steps


def _shift_round(x, shift: int):
    """rshift_round(x, shift) of an int64 PrimExpr (compile.quant.fixed_point's rounding)."""
    return (x + (T.int64(1) << T.int64(shift - 1))) >> T.int64(shift)


def _clip_cast(x, low: int, high: int, dtype: str):
    return T.Cast(dtype, T.min(T.max(x, T.int64(low)), T.int64(high)))


def _layer_norm_func(rows: int, channels: int, in_dtype: str, out_dtype: str,
                     params: P.LayerNormParams) -> tvm.tirx.PrimFunc:
    norm_shift = P.NORM_INV_BITS - P.NORM_FRAC

    def centered(x, i, c, stats):  # x - mean, int64
        return T.Cast("int64", x[i, c]) - stats[0]

    @T.prim_func(private=True, s_tir=True)
    def layer_norm(x: T.Buffer((rows, channels), in_dtype), gamma: T.Buffer((channels,), "int64"),
                   beta: T.Buffer((channels,), "int64"), out: T.Buffer((rows, channels), out_dtype)):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            for i in T.parallel(rows):
                with T.sblock("row"):
                    stats = T.sblock_alloc_buffer((3,), "int64", scope="local")  # mean, sum of squares, 1 / std
                    root = T.sblock_alloc_buffer((1,), "int64", scope="local")
                    stats[0] = T.int64(0)
                    for c in T.serial(channels):
                        stats[0] = stats[0] + T.Cast("int64", x[i, c])
                    stats[0] = (stats[0] * T.int64(2) + T.int64(channels)) // T.int64(2 * channels)
                    stats[1] = T.int64(0)
                    for c in T.serial(channels):
                        stats[1] = stats[1] + centered(x, i, c, stats) * centered(x, i, c, stats)
                    isqrt_steps(stats[1] // T.int64(channels) + T.int64(params.eps), root)
                    stats[2] = (T.int64(1) << T.int64(P.NORM_INV_BITS)) // T.max(root[0], T.int64(1))
                    for c in T.serial(channels):
                        out[i, c] = _clip_cast(_shift_round(_shift_round(centered(x, i, c, stats) * stats[2], norm_shift)
                                                            * gamma[c] + beta[c], params.shift),
                                               params.low, params.high, out_dtype)

    return layer_norm


def emit_layer_norm(em, x: relax.Expr, params: P.LayerNormParams, dtype: str) -> relax.Expr:
    """I-ViT LayerNorm over the last axis of x [rows, C] as one kernel, output in `params`' units."""
    rows, channels = em.shape(x)
    in_dtype = str(x.ty.dtype)
    func = _layer_norm_func(rows, channels, in_dtype, dtype, params)
    gv = em.bb.add_func(func, f"layer_norm_int_{in_dtype}_{dtype}_{rows}_{channels}")
    return em.emit(relax.call_tir(gv, [x, em.const(params.gamma, "int64"), em.const(params.beta, "int64")],
                                  relax.TensorType((rows, channels), dtype)))


def _softmax_func(heads: int, queries: int, keys: int, exponent: P.Requant) -> tvm.tirx.PrimFunc:
    mult, shift = int(np.ravel(exponent.mult)[0]), int(np.ravel(exponent.shift)[0])
    c1, c2 = P.exp2_poly()
    frac = P.EXP_FRAC

    def exp2(logits, bias, h, q, k, stats):
        """2^-u in Q15, u = -rshift_round((logit + bias - row max) * mult, shift): integer_numerics' steps."""
        u = T.min(-_shift_round((T.Cast("int64", logits[h, q, k] + bias[k]) - stats[0]) * T.int64(mult), shift),
                  T.int64(P.EXP_MIN << frac))
        f = u & T.int64((1 << frac) - 1)
        poly = _shift_round(f * T.int64(c1), frac) + _shift_round(_shift_round(f * f, frac) * T.int64(c2), frac)
        return (poly + T.int64(1 << frac)) >> (u >> T.int64(frac))

    @T.prim_func(private=True, s_tir=True)
    def softmax(logits: T.Buffer((heads, queries, keys), "int32"), bias: T.Buffer((keys,), "int32"),
                levels: T.Buffer((heads,), "int64"), out: T.Buffer((heads, queries, keys), "uint8")):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            for row in T.parallel(heads * queries):
                with T.sblock("row"):
                    stats = T.sblock_alloc_buffer((3,), "int64", scope="local")  # row max, sum of 2^-u, 2^31 / sum
                    stats[0] = T.Cast("int64", logits[row // queries, row % queries, 0] + bias[0])
                    for k in T.serial(keys):
                        stats[0] = T.max(stats[0], T.Cast("int64", logits[row // queries, row % queries, k] + bias[k]))
                    stats[1] = T.int64(0)
                    for k in T.serial(keys):
                        stats[1] = stats[1] + exp2(logits, bias, row // queries, row % queries, k, stats)
                    stats[2] = (T.int64(1) << T.int64(P.PROB_RECIP_BITS)) // stats[1]
                    for k in T.serial(keys):
                        out[row // queries, row % queries, k] = _clip_cast(
                            _shift_round(exp2(logits, bias, row // queries, row % queries, k, stats)
                                         * levels[row // queries] * stats[2], P.PROB_RECIP_BITS), 0, 255, "uint8")

    return softmax


def emit_softmax(em, logits: relax.Expr, bias: relax.Expr | None, exponent: P.Requant,
                 levels: np.ndarray) -> relax.Expr:
    """uint8 probabilities [heads, N, N] of int32 logits (+ an int32 bias per key: proportional attention)."""
    heads, queries, keys = em.shape(logits)
    if bias is None:
        bias = em.const(np.zeros(keys, np.int32))
    func = _softmax_func(heads, queries, keys, exponent)
    gv = em.bb.add_func(func, f"softmax_int_{heads}_{queries}_{keys}")
    return em.emit(relax.call_tir(gv, [logits, bias, em.const(np.ravel(levels), "int64")],
                                  relax.TensorType((heads, queries, keys), "uint8")))
