"""Integer matmuls for CUDA targets as plain Relax matmuls, scheduled by compile.lowering.cuda / dlight.

Two forms, chosen per matmul (use_tensor_cores):
- tensor cores (sm_80+, shapes where the 128 x 128 tiles waste at most half the work): int8 x int8 -> int32,
  a uint8 operand shifted by -128 first; compile.lowering.cuda schedules it on wmma s8 fragments (IMMA).
- otherwise uint8 x int8 -> int32 (an int8 operand shifted by +128): dlight's SIMT matmul schedule (dp4a),
  which never tries its int8 tensor-core rule on mixed signedness.
Either way the exact sum is restored by subtracting shift * the column sums of the right operand, and the
caller's elementwise epilogue (requantize, bias) is fused into the matmul kernel.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax
from tvm.target import Target

TILE_MN, TILE_K = 128, 16  # what the wmma schedule pads M, N and K to
MAX_PADDING = 2.0  # padded / real work above which the SIMT (dp4a) kernel is kept: a choice, not measured


def use_tensor_cores(target: Target, m: int, n: int, k: int) -> bool:
    """Whether an [M, K] x [K, N] int8 matmul goes to the tensor cores on `target`."""
    arch = str(target.attrs.get("arch", ""))
    if not arch.startswith("sm_") or int(arch.removeprefix("sm_")) < 80:
        return False

    def padded(size: int, tile: int) -> int:
        return math.ceil(size / tile) * tile

    return padded(m, TILE_MN) * padded(n, TILE_MN) * padded(k, TILE_K) <= MAX_PADDING * m * n * k


def _shifted(bb: relax.BlockBuilder, x: relax.Expr, dtype: str) -> tuple[relax.Expr, int]:
    """(x as `dtype`, the shift added to it): 0 if already `dtype`, else +128 (int8 -> uint8) or -128."""
    if x.ty.dtype == dtype:
        return x, 0
    shift = 128 if dtype == "uint8" else -128
    moved = relax.op.add(relax.op.astype(x, "int32"), relax.const(shift, "int32"))
    return bb.emit(relax.op.astype(moved, dtype)), shift


def _lhs_dtype(target: Target, a: relax.Expr, n: int, k: int) -> str:
    m = int(a.ty.shape[-2])
    return "int8" if use_tensor_cores(target, m, n, k) else "uint8"


def dense(bb: relax.BlockBuilder, x: relax.Expr, weight: np.ndarray, target: Target) -> relax.Expr:
    """x [..., M, K] int8/uint8 @ weight [K, N] int8 -> int32 [..., M, N]."""
    k, n = weight.shape
    x, shift = _shifted(bb, x, _lhs_dtype(target, x, n, k))
    product = bb.emit(relax.op.matmul(x, relax.const(weight), out_dtype="int32"))
    if shift == 0:
        return product
    correction = (-shift * weight.astype(np.int64).sum(axis=0)).astype(np.int32)
    return bb.emit(relax.op.add(product, relax.const(correction)))


def batch_matmul(bb: relax.BlockBuilder, a: relax.Expr, b: relax.Expr, transpose_b: bool,
                 target: Target) -> relax.Expr:
    """a [..., M, K] int8/uint8 @ b [..., K, N] int8 (b [..., N, K] with transpose_b) -> int32 [..., M, N]."""
    if transpose_b:
        rank = len(b.ty.shape)
        b = bb.emit(relax.op.permute_dims(b, [*range(rank - 2), rank - 1, rank - 2]))
    k, n = (int(d) for d in b.ty.shape.values[-2:])
    a, shift = _shifted(bb, a, _lhs_dtype(target, a, n, k))
    product = bb.emit(relax.op.matmul(a, b, out_dtype="int32"))
    if shift == 0:
        return product
    sums = bb.emit(relax.op.sum(relax.op.astype(b, "int32"), axis=[-2], keepdims=True))
    return bb.emit(relax.op.add(product, relax.op.multiply(sums, relax.const(-shift, "int32"))))
