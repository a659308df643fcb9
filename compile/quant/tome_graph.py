"""ToMe in the integer graph: bipartite soft matching on the int8 keys, then one merge kernel.

The same algorithm as compile.tome (which the float path exports from PyTorch), emitted directly
as Relax for the integer graph, in integers so int8-full stays integer only: keys summed over heads
(int32), each normalized to an int8 unit vector (times the integer reciprocal of its norm: one
kernel on CPUs), cosine scores as an int8 matmul on the target's dot-product kernel; which tokens
merge where, and the size-weighted merge itself, are two small kernels (compile.quant.tome_kernels).
Static shapes: r is fixed per block.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from compile.quant.tome_kernels import emit_destinations, emit_unit_keys

UNIT_BITS = 7  # unit keys in int8: components floor(2^7 * k / |k|), clipped to [-127, 127]
INVERSE_BITS = 30  # 1 / |k| as floor(2^30 / |k|): one division per token, not per component


def protection_mask(num_a: int, num_b: int, protected: int) -> np.ndarray:
    """[num_a, num_b] True where an edge touches a protected prefix token (token 2i is A[i], 2i+1 is B[i])."""
    rows = (np.arange(num_a) < (protected + 1) // 2)[:, None]
    cols = (np.arange(num_b) < protected // 2)[None, :]
    return rows | cols


def _unit_keys_chain(em, qkv: relax.Expr, heads: int) -> tuple[relax.Expr, relax.Expr]:
    """compile.quant.tome_kernels.emit_unit_keys as Relax ops (CUDA: dlight spreads them over threads)."""
    from compile.quant.integer_ops import emit_isqrt

    tokens, width = em.shape(qkv)
    dim = width // 3 // heads
    keys = em.emit(relax.op.strided_slice(relax.op.reshape(qkv, (tokens, 3, heads, dim)), [1], [1], [2]))
    ksum = em.emit(relax.op.sum(relax.op.astype(keys, "int32"), axis=[1, 2]))  # [N, D]
    norm = emit_isqrt(em, em.emit(relax.op.sum(relax.op.multiply(ksum, ksum), axis=1, keepdims=True)))
    inverse = em.emit(relax.op.floor_divide(em.const(1 << INVERSE_BITS, "int64"),
                                            relax.op.astype(relax.op.maximum(norm, em.const(1, "int32")), "int64")))
    unit = em.emit(relax.op.multiply(relax.op.astype(ksum, "int64"), inverse))
    unit = em.emit(relax.op.right_shift(unit, em.const(INVERSE_BITS - UNIT_BITS, "int64")))
    unit = em.emit(relax.op.astype(relax.op.clip(unit, -127, 127), "int8"))
    return tuple(em.emit(relax.op.expand_dims(em.rows(unit, start, tokens, step=2), 0)) for start in (0, 1))


def match_tokens(em, qkv: relax.Expr, heads: int, r: int, protected: int, integer_only: bool = True) -> relax.Expr:
    """The output row (int32 [N]) of every token of `qkv` int8 [N, 3 * heads * D] after merging the r A
    tokens most similar to a B token into it (keys summed over heads, cosine similarity); the same rows with
    integer_only False, which lets the CPU kernel take its square roots through floats (the int8 graph)."""
    if em.target.kind.name == "llvm":
        a, b = emit_unit_keys(em, qkv, heads, UNIT_BITS, INVERSE_BITS, integer_only)
    else:
        a, b = _unit_keys_chain(em, qkv, heads)
    scores = em.batch_matmul(a, b, transpose_b=True)
    return emit_destinations(em, em.emit(relax.op.squeeze(scores, [0])), r, protected)
