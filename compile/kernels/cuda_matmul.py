"""Integer matmuls for CUDA targets as plain Relax matmuls, left to dlight's GPU Matmul rule.

The activation is always passed as uint8 (an int8 one shifted by +128, the exact sum restored by
subtracting 128 * the column sums of the right operand). Why: with int8 x int8 operands dlight
picks its int8 tensor-core schedule (MatmulInt8Tensorization), whose lowering fails in TVM 0.27
(InjectSoftwarePipeline: "GetWmmaFragmentSize" check) for the DeiT shapes; a uint8 x int8 matmul
gets dlight's SIMT matmul schedule, which accumulates exactly in int32 (the caller's elementwise
epilogue fused in, like every other dlight matmul).
"""

from __future__ import annotations

import numpy as np
from tvm import relax


def _unsigned(bb: relax.BlockBuilder, x: relax.Expr) -> relax.Expr:
    """x as uint8: unchanged if uint8, x + 128 if int8."""
    if x.ty.dtype == "uint8":
        return x
    shifted = relax.op.add(relax.op.astype(x, "int32"), relax.const(128, "int32"))
    return bb.emit(relax.op.astype(shifted, "uint8"))


def dense(bb: relax.BlockBuilder, x: relax.Expr, weight: np.ndarray) -> relax.Expr:
    """x [..., M, K] int8/uint8 @ weight [K, N] int8 -> int32 [..., M, N]."""
    product = bb.emit(relax.op.matmul(_unsigned(bb, x), relax.const(weight), out_dtype="int32"))
    if x.ty.dtype == "uint8":
        return product
    correction = (-128 * weight.astype(np.int64).sum(axis=0)).astype(np.int32)
    return bb.emit(relax.op.add(product, relax.const(correction)))


def batch_matmul(bb: relax.BlockBuilder, a: relax.Expr, b: relax.Expr, transpose_b: bool) -> relax.Expr:
    """a [..., M, K] int8/uint8 @ b [..., K, N] int8 (b [..., N, K] with transpose_b) -> int32 [..., M, N]."""
    if transpose_b:
        rank = len(b.ty.shape)
        b = bb.emit(relax.op.permute_dims(b, [*range(rank - 2), rank - 1, rank - 2]))
    product = bb.emit(relax.op.matmul(_unsigned(bb, a), b, out_dtype="int32"))
    if a.ty.dtype == "uint8":
        return product
    sums = bb.emit(relax.op.sum(relax.op.astype(b, "int32"), axis=[-2], keepdims=True))
    return bb.emit(relax.op.add(product, relax.op.multiply(sums, relax.const(-128, "int32"))))
