"""LayerNorm and softmax on CPUs as one hand-written TIR kernel each, a row at a time: every graph's on CPUs.

int8-full's integer LayerNorm and softmax: as Relax op chains they were 7 and 4 kernels with int64 intermediates
of the full tensor between them (int8-full at 2.6x int8's latency, results/data/bench_int8_full). Here a row's
statistics stay in registers: LayerNorm reads its row three times (sum, variance, output); softmax takes the row
max, then 2^-u into an int32 row of scratch, its sum and the output from it (DeiT-tiny's 12 calls 1.21 -> 0.60 ms
against 2^-u computed twice in int64). The steps are exactly those of compile.graph.integer_numerics (the numpy
reference in tests/integer_reference.py checks them bit for bit). CUDA targets keep the op chains, which dlight
spreads over threads; one thread per row would serialize them.

The float softmax (int8's: int32 logits to uint8 probabilities; fp32's: float32 to float32): TVM's fused
fast_softmax kept the max and the exp-and-sum loops scalar (a float max reduction does not vectorize under
reassociation alone; a loop that both stores exp and sums it did not either). Here the row max is an int32 max
(of the logits, or of float logits' ordered bits) plus the largest bias (log2 sizes >= 0, whose float bits order
as int32): an upper bound of the true max, which softmax does not mind; exp is base 2 with a polynomial, stored in
a row of scratch, summed in its own loop. DeiT-tiny's int8 [3, 197, 197]: 187 -> 60 us.
The float LayerNorm (fp32's, and int8's with the quantization of the GEMM input it feeds folded into its
per-channel scale and shift): two vectorized reductions (mean, centred sum of squares) and one output pass a row.

Pitfalls: a row's scalars live in one buffer of the row's scratch type (an int32 and an int64 buffer side by side
in one block gave wrong results with TVM 0.27: its storage rewrite merges them). Scratch is "global" scope, which
TVM's CPU lowering puts on the stack under 1 KB; "local" became a TVMBackendAllocWorkspace / Free pair per row
(int8-full's LayerNorm 22 -> 13.5 us without). A softmax row of exp stays on the stack up to 255 keys.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from compile.kernels.integer_ops import OPAQUE, clip_cast, isqrt_steps
from compile.quant import integer_params as P


def _shift_round(x, shift: int):
    """rshift_round(x, shift) of an int32 / int64 PrimExpr (compile.quant.fixed_point's rounding)."""
    return (x + (tvm.tirx.const(1, str(x.ty)) << (shift - 1))) >> shift


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
                    stats = T.sblock_alloc_buffer((3,), "int64", scope="global")  # mean, sum of squares, 1 / std
                    root = T.sblock_alloc_buffer((1,), "int64", scope="global")
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
                        out[i, c] = clip_cast(_shift_round(_shift_round(centered(x, i, c, stats) * stats[2], norm_shift)
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
        """2^-u in Q15 (int32), u = -rshift_round((logit + bias - row max) * mult, shift): integer_numerics' steps.
        Only the product with mult is int64; u <= 30 << 15 and what follows fit int32."""
        d = T.Cast("int64", logits[h, q, k] + bias[k] - stats[0])
        u = T.Cast("int32", T.min(-_shift_round(d * T.int64(mult), shift), T.int64(P.EXP_MIN << frac)))
        f = u & ((1 << frac) - 1)
        poly = _shift_round(f * c1, frac) + _shift_round(_shift_round(f * f, frac) * c2, frac)
        return (poly + (1 << frac)) >> (u >> frac)

    @T.prim_func(private=True, s_tir=True)
    def softmax(logits: T.Buffer((heads, queries, keys), "int32"), bias: T.Buffer((keys,), "int32"),
                levels: T.Buffer((heads,), "int32"), out: T.Buffer((heads, queries, keys), "uint8")):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            for row in T.parallel(heads * queries):
                with T.sblock("row"):
                    exp = T.sblock_alloc_buffer((keys,), "int32", scope="global")
                    # row max, sum of 2^-u (< keys * 2^15), 2^31 / sum (<= 2^16): int32 like the row of 2^-u
                    stats = T.sblock_alloc_buffer((3,), "int32", scope="global")
                    stats[0] = logits[row // queries, row % queries, 0] + bias[0]
                    for k in T.serial(keys):
                        stats[0] = T.max(stats[0], logits[row // queries, row % queries, k] + bias[k])
                    for k in T.serial(keys):
                        exp[k] = exp2(logits, bias, row // queries, row % queries, k, stats)
                    stats[1] = 0
                    for k in T.serial(keys):
                        stats[1] = stats[1] + exp[k]
                    stats[2] = T.Cast("int32", (T.int64(1) << T.int64(P.PROB_RECIP_BITS)) // T.Cast("int64", stats[1]))
                    for k in T.serial(keys):  # 2^-u * levels < 2^30 (255 << 7 levels at most): int32
                        out[row // queries, row % queries, k] = clip_cast(
                            _shift_round(T.Cast("int64", exp[k] * levels[row // queries]) * T.Cast("int64", stats[2]),
                                         P.PROB_RECIP_BITS), 0, 255, "uint8")

    return softmax


def emit_softmax(em, logits: relax.Expr, bias: relax.Expr | None, exponent: P.Requant,
                 levels: np.ndarray) -> relax.Expr:
    """uint8 probabilities [heads, N, N] of int32 logits (+ an int32 bias per key: proportional attention)."""
    heads, queries, keys = em.shape(logits)
    if bias is None:
        bias = em.const(np.zeros(keys, np.int32))
    func = _softmax_func(heads, queries, keys, exponent)
    gv = em.bb.add_func(func, f"softmax_int_{heads}_{queries}_{keys}")
    return em.emit(relax.call_tir(gv, [logits, bias, em.const(np.ravel(levels), "int32")],
                                  relax.TensorType((heads, queries, keys), "uint8")))


EXP2_TAYLOR = [math.log(2) ** n / math.factorial(n) for n in range(7)]  # 2^f on [-1/2, 1/2]: 1e-7 relative


def _exp2(t):
    """2^t of a float32 PrimExpr t <= 0: 2^round(t) from the exponent bits times a polynomial of the rest."""
    t = T.max(t, T.float32(-126.0))  # below, every probability rounds to 0
    n = T.round(t)
    f = t - n
    poly = T.float32(EXP2_TAYLOR[-1])
    for c in reversed(EXP2_TAYLOR[:-1]):
        poly = poly * f + T.float32(c)
    return poly * T.reinterpret("float32", T.shift_left(T.Cast("int32", n) + 127, 23))


def _ordered_bits(x):
    """An int32 that orders as the float32 x does (the magnitude bits of negatives flipped); its own inverse."""
    return x ^ ((x >> 31) & 0x7FFFFFFF)


def _float_softmax_func(heads: int, queries: int, keys: int, in_dtype: str, out_dtype: str) -> tvm.tirx.PrimFunc:
    # the row max runs as an int32 max (vectorized), of float logits through their ordered bits
    if in_dtype == "int32":
        def as_int(logit):
            return logit

        def as_float(top):
            return T.Cast("float32", top)
    else:
        def as_int(logit):
            return _ordered_bits(T.reinterpret("int32", logit))

        def as_float(top):
            return T.reinterpret("float32", _ordered_bits(top))

    def log2_logit(logits, bias, coeffs, row, k):  # logit * scale, in base 2, + log2(size)
        return T.Cast("float32", logits[row // queries, row % queries, k]) * coeffs[0, row // queries] + bias[k]

    def output(exp, stats, k):
        if out_dtype == "uint8":
            return clip_cast(T.round(exp[k] * stats[1]), 0, 255, "uint8")
        return exp[k] * stats[1]

    @T.prim_func(private=True, s_tir=True)
    def softmax(logits: T.Buffer((heads, queries, keys), in_dtype), bias: T.Buffer((keys,), "float32"),
                coeffs: T.Buffer((2, heads), "float32"), out: T.Buffer((heads, queries, keys), out_dtype)):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            for row in T.parallel(heads * queries):
                with T.sblock("row"):
                    exp = T.sblock_alloc_buffer((keys,), "float32", scope="global")
                    top = T.sblock_alloc_buffer((2,), "int32", scope="global")  # max logit, max bias bits
                    stats = T.sblock_alloc_buffer((2,), "float32", scope="global")  # row max bound, levels / sum
                    top[0] = as_int(logits[row // queries, row % queries, 0])
                    top[1] = 0
                    for k in T.serial(keys):
                        top[0] = T.max(top[0], as_int(logits[row // queries, row % queries, k]))
                        top[1] = T.max(top[1], T.reinterpret("int32", bias[k]))
                    stats[0] = as_float(top[0]) * coeffs[0, row // queries] + T.reinterpret("float32", top[1])
                    for k in T.serial(keys):
                        exp[k] = _exp2(log2_logit(logits, bias, coeffs, row, k) - stats[0])
                    stats[1] = T.float32(0)
                    for k in T.serial(keys):
                        stats[1] = stats[1] + exp[k]
                    stats[1] = coeffs[1, row // queries] / stats[1]
                    for k in T.serial(keys):
                        out[row // queries, row % queries, k] = output(exp, stats, k)

    return softmax


def emit_float_softmax(em, logits: relax.Expr, scale: float, log2_size: relax.Expr | None,
                       levels: np.ndarray | None) -> relax.Expr:
    """softmax(logits * scale + ln size) [heads, N, N] of int32 or float32 logits: uint8 round(levels * p), levels
    each head's 1 / probability scale (int8), or float32 p with levels None (fp32); log2_size: float32 [N]
    (proportional attention) or None."""
    heads, queries, keys = em.shape(logits)
    if log2_size is None:
        log2_size = em.const(np.zeros(keys, np.float32))
    in_dtype, out_dtype = str(logits.ty.dtype), "float32" if levels is None else "uint8"
    levels = np.ones(heads) if levels is None else np.ravel(levels)
    coeffs = np.stack([np.full(heads, scale * np.log2(np.e)), levels]).astype(np.float32)
    name = "softmax_float" if in_dtype == "int32" else "softmax_float32"  # int8's / fp32's
    gv = em.bb.add_func(_float_softmax_func(heads, queries, keys, in_dtype, out_dtype), f"{name}_{heads}_{queries}_{keys}")
    return em.emit(relax.call_tir(gv, [logits, log2_size, em.const(coeffs)],
                                  relax.TensorType((heads, queries, keys), out_dtype)))


def _float_layer_norm_func(rows: int, channels: int, eps: float, out_dtype: str, low: int, high: int):
    quantize = out_dtype != "float32"

    def output(x, scale, shift, i, c, stats):
        y = (x[i, c] - stats[0]) * stats[1] * scale[c] + shift[c]
        return clip_cast(T.round(y), low, high, out_dtype) if quantize else y

    @T.prim_func(private=True, s_tir=True)
    def layer_norm(x: T.Buffer((rows, channels), "float32"), scale: T.Buffer((channels,), "float32"),
                   shift: T.Buffer((channels,), "float32"), out: T.Buffer((rows, channels), out_dtype)):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            for i in T.parallel(rows):
                with T.sblock("row"):
                    stats = T.sblock_alloc_buffer((2,), "float32", scope="global")  # mean, 1 / std
                    stats[0] = T.float32(0)
                    for c in T.serial(channels):
                        stats[0] = stats[0] + x[i, c]
                    stats[0] = stats[0] * T.float32(1.0 / channels)
                    stats[1] = T.float32(0)
                    for c in T.serial(channels):
                        stats[1] = stats[1] + (x[i, c] - stats[0]) * (x[i, c] - stats[0])
                    stats[1] = T.float32(1) / T.sqrt(stats[1] * T.float32(1.0 / channels) + T.float32(eps))
                    for c in T.serial(channels):
                        out[i, c] = output(x, scale, shift, i, c, stats)

    return layer_norm


def emit_float_layer_norm(em, x: relax.Expr, gamma: np.ndarray, beta: np.ndarray, eps: float,
                          quantize: tuple[np.ndarray, int, int] | None = None) -> relax.Expr:
    """LayerNorm over the last axis of float32 x [rows, C]; quantize = (multiplier per channel or scalar, low,
    high): int8 clip(round(LayerNorm(x) * multiplier)) instead of float32."""
    rows, channels = em.shape(x)
    scale, shift, dtype, low, high = np.asarray(gamma, np.float64), np.asarray(beta, np.float64), "float32", 0, 0
    if quantize is not None:
        multiplier, low, high = quantize
        scale, shift, dtype = scale * multiplier, shift * multiplier, "int8"
    func = _float_layer_norm_func(rows, channels, float(eps), dtype, low, high)
    gv = em.bb.add_func(func, f"layer_norm_float_{rows}_{channels}_{dtype}")
    return em.emit(relax.call_tir(gv, [x, em.const(scale, "float32"), em.const(shift, "float32")],
                                  relax.TensorType((rows, channels), dtype)))
