"""Integer matmul kernels as Relax calls: exact int32 sums of int8 / uint8 operands.

The integer graph (compile.quant) calls only these two functions for its matmuls, so how a target
computes them (layouts, pre-packed weights, dot-product instructions) stays behind this interface.
Semantics are target-independent: the result is the exact int32 sum of products.

CPU targets get one TE function per matmul (compile.kernels.packed_gemm: operands packed for the
target's dot instruction, constant weights packed here in numpy) that compile.schedule.int8_gemm
tiles and tensorizes with the target's instruction (compile.kernels.dot_kernel: AVX-512 VNNI
vpdpbusd, AVX2 vpmaddwd, ARM dotprod sdot, ARMv8.0 NEON smull + sadalp, else a widening fallback);
CUDA targets get plain Relax matmuls for dlight (compile.kernels.cuda_matmul).
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.target import Target

from compile.kernels import cuda_matmul, packed_gemm
from compile.kernels.dot_kernel import dot_kernel_for
from compile.kernels.packed_gemm import GemmPlan

INT8_TYPES = ("int8", "uint8")


def _static_shape(x: relax.Expr, what: str) -> list[int]:
    shape = x.ty.shape
    if shape is None or not all(isinstance(v, int) or hasattr(v, "value") for v in shape.values):
        raise ValueError(f"{what}: integer matmuls need static shapes, got {x.ty}")
    return [int(v) for v in shape.values]


def _check_dtype(x: relax.Expr, allowed: tuple[str, ...], what: str) -> None:
    if x.ty.dtype not in allowed:
        raise ValueError(f"{what}: dtype {x.ty.dtype} is not one of {allowed}")


def emit_int8_dense(bb: relax.BlockBuilder, x: relax.Expr, weight: np.ndarray, target: Target, *,
                    x_columns: tuple[int, int] | None = None) -> relax.Expr:
    """x [..., M, K] int8 or uint8 @ weight [K, N] int8 (a constant) -> int32 [..., M, N].

    x_columns=(start, stop): multiply x[..., start:stop] instead (K = stop - start), read in place
    by the kernel rather than copied out by a slice first (a layer split into K segments).
    """
    _check_dtype(x, INT8_TYPES, "emit_int8_dense x")
    if weight.size and (weight.min() < -128 or weight.max() > 127):
        raise ValueError(f"emit_int8_dense: weight values outside int8 [{weight.min()}, {weight.max()}]")
    weight = np.ascontiguousarray(weight, dtype=np.int8)
    *_, m, x_k = _static_shape(x, "emit_int8_dense x")
    start, stop = x_columns if x_columns is not None else (0, x_k)
    if not 0 <= start < stop <= x_k:
        raise ValueError(f"emit_int8_dense: x_columns {x_columns} outside x [..., {m}, {x_k}]")
    k = stop - start
    if weight.ndim != 2 or weight.shape[0] != k:
        raise ValueError(f"emit_int8_dense: weight {weight.shape} does not match x [..., {m}, {k}]")
    if target.kind.name == "cuda":
        if (start, stop) != (0, x_k):
            x = bb.emit(relax.op.strided_slice(x, [len(x.ty.shape) - 1], [start], [stop]))
        return cuda_matmul.dense(bb, x, weight)
    plan = GemmPlan.make(dot_kernel_for(target), m, weight.shape[1], k, x.ty.dtype)
    args = [x, relax.const(packed_gemm.pack_weight(weight, plan))]
    correction = packed_gemm.weight_correction(weight, plan)
    if correction is not None:
        args.append(relax.const(correction))
    return bb.emit_te(lambda x, w, *c: packed_gemm.dense(x, w, c[0] if c else None, plan, start), *args,
                      primfunc_name_hint="int8_dense")


def emit_int8_batch_matmul(bb: relax.BlockBuilder, a: relax.Expr, b: relax.Expr, target: Target,
                           transpose_b: bool = False) -> relax.Expr:
    """a [B, M, K] int8/uint8 @ b [B, K, N] int8 (or b [B, N, K] with transpose_b) -> int32 [B, M, N]."""
    _check_dtype(a, INT8_TYPES, "emit_int8_batch_matmul a")
    _check_dtype(b, ("int8",), "emit_int8_batch_matmul b")
    *lead, m, k = _static_shape(a, "emit_int8_batch_matmul a")
    *b_lead, b_k, n = _static_shape(b, "emit_int8_batch_matmul b")
    if transpose_b:
        b_k, n = n, b_k
    if b_lead != lead or b_k != k:
        raise ValueError(f"emit_int8_batch_matmul: shapes {a.ty.shape} and {b.ty.shape} "
                         f"(transpose_b={transpose_b}) do not multiply")
    if target.kind.name == "cuda":
        return cuda_matmul.batch_matmul(bb, a, b, transpose_b)
    plan = GemmPlan.make(dot_kernel_for(target), m, n, k, a.ty.dtype)
    args = [a, b]
    if plan.shift:
        args.append(bb.emit_te(lambda b: packed_gemm.rhs_correction(b, plan, transpose_b), b,
                               primfunc_name_hint="int8_correction"))
    return bb.emit_te(lambda a, b, *c: packed_gemm.batch_matmul(a, b, c[0] if c else None, plan, transpose_b), *args,
                      primfunc_name_hint="int8_batch_matmul")
