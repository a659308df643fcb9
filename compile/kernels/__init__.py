"""Integer matmul kernels as Relax calls: exact int32 sums of int8 / uint8 operands.

The integer graph (compile.quant) calls only these two functions for its matmuls, so how a target
computes them (layouts, pre-packed weights, dot-product instructions) stays behind this interface.
Semantics are target-independent: the result is the exact int32 sum of products.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.target import Target


def emit_int8_dense(bb: relax.BlockBuilder, x: relax.Expr, weight: np.ndarray, target: Target) -> relax.Expr:
    """x [..., M, K] int8 or uint8 @ weight [K, N] int8 (a constant) -> int32 [..., M, N]."""
    return bb.emit(relax.op.matmul(x, relax.const(np.ascontiguousarray(weight, dtype=np.int8)), out_dtype="int32"))


def emit_int8_batch_matmul(bb: relax.BlockBuilder, a: relax.Expr, b: relax.Expr, target: Target,
                           transpose_b: bool = False) -> relax.Expr:
    """a [B, M, K] int8/uint8 @ b [B, K, N] int8 (or b [B, N, K] with transpose_b) -> int32 [B, M, N]."""
    if transpose_b:
        b = bb.emit(relax.op.permute_dims(b, [0, 2, 1]))
    return bb.emit(relax.op.matmul(a, b, out_dtype="int32"))
