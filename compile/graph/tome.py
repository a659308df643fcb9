"""ToMe in the graph, for every numerics: bipartite soft matching on the keys, then one merge kernel.

The algorithm of compile.model.tome (PyTorch's ToMe, the tests' reference), emitted as Relax with static shapes
(r is fixed per block): the keys summed over heads, each normalized to a unit vector (one kernel on CPUs),
cosine scores as a matmul, then which tokens merge where and the size-weighted merge itself as two small kernels
(compile.kernels.tome_kernels). Float graphs match on their float32 keys, so they merge what PyTorch's ToMe
merges up to float rounding; the integer graphs match on int8 keys in integers (int8-full stays integer only):
unit keys floor(2^7 k / |k|) and int32 scores on the target's dot-product kernel.
"""

from __future__ import annotations

from tvm import relax

from compile.kernels.integer_ops import emit_isqrt
from compile.kernels.tome_kernels import emit_destinations, emit_unit_keys

UNIT_BITS = 7  # int8 unit keys: components floor(2^7 * k / |k|), clipped to [-127, 127]
INVERSE_BITS = 30  # 1 / |k| as floor(2^30 / |k|): one division per token, not per component


def _keys(em, qkv: relax.Expr, heads: int, dtype: str) -> relax.Expr:
    """The keys of qkv [N, 3 * heads * D] summed over heads, [N, D] in `dtype`."""
    tokens, width = em.shape(qkv)
    dim = width // 3 // heads
    keys = em.emit(relax.op.strided_slice(relax.op.reshape(qkv, (tokens, 3, heads, dim)), [1], [1], [2]))
    return em.emit(relax.op.sum(relax.op.astype(keys, dtype), axis=[1, 2]))


def _a_and_b(em, unit: relax.Expr) -> tuple[relax.Expr, relax.Expr]:
    tokens = em.shape(unit)[0]
    return tuple(em.emit(relax.op.expand_dims(em.rows(unit, start, tokens, step=2), 0)) for start in (0, 1))


def _unit_keys_chain(em, qkv: relax.Expr, heads: int) -> tuple[relax.Expr, relax.Expr]:
    """compile.kernels.tome_kernels.emit_unit_keys as Relax ops (CUDA: dlight spreads them over threads)."""
    if qkv.ty.dtype != "int8":
        ksum = _keys(em, qkv, heads, str(qkv.ty.dtype))
        norm = em.emit(relax.op.sqrt(relax.op.sum(relax.op.multiply(ksum, ksum), axis=1, keepdims=True)))
        return _a_and_b(em, em.emit(relax.op.divide(ksum, norm)))
    ksum = _keys(em, qkv, heads, "int32")
    norm = emit_isqrt(em, em.emit(relax.op.sum(relax.op.multiply(ksum, ksum), axis=1, keepdims=True)))
    inverse = em.emit(relax.op.floor_divide(em.const(1 << INVERSE_BITS, "int64"),
                                            relax.op.astype(relax.op.maximum(norm, em.const(1, "int32")), "int64")))
    unit = em.emit(relax.op.multiply(relax.op.astype(ksum, "int64"), inverse))
    unit = em.emit(relax.op.right_shift(unit, em.const(INVERSE_BITS - UNIT_BITS, "int64")))
    return _a_and_b(em, em.emit(relax.op.astype(relax.op.clip(unit, -127, 127), "int8")))


def match_tokens(em, qkv: relax.Expr, heads: int, r: int, protected: int, integer_only: bool = True) -> relax.Expr:
    """The output row (int32 [N]) of every token of `qkv` [N, 3 * heads * D] (int8 or float) after merging the r
    A tokens most similar to a B token into it (keys summed over heads, cosine similarity); integer_only False
    lets the CPU kernel take int8 keys' square roots through floats (the int8 graph: the same rows)."""
    if em.cpu:
        a, b = emit_unit_keys(em, qkv, heads, UNIT_BITS, INVERSE_BITS, integer_only)
    else:
        a, b = _unit_keys_chain(em, qkv, heads)
    if qkv.ty.dtype == "int8":
        scores = em.batch_matmul(a, b, transpose_b=True)
    else:
        scores = em.emit(relax.op.matmul(a, em.emit(relax.op.permute_dims(b, [0, 2, 1]))))
    return emit_destinations(em, em.emit(relax.op.squeeze(scores, [0])), r, protected)
