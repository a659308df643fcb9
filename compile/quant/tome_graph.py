"""ToMe in the integer graph: bipartite soft matching on the int8 keys, merges as gathers + one-hot matmul.

The same algorithm as compile.tome (which the float path exports from PyTorch), emitted directly
as Relax for the integer graph, in integers so int8-full stays integer only: keys summed over heads
(int32), each normalized to an int8 unit vector (<< UNIT_BITS, divided by its integer norm), cosine
scores as an int8 matmul, protected prefix tokens masked, stable descending argsort.
Static shapes: r is fixed per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

UNIT_BITS = 7  # unit keys in int8: components round(2^7 * k / |k|), clipped to [-127, 127]
MASKED = -(2**31) + 1


@dataclass(frozen=True)
class Match:
    """Which tokens merge: A = even tokens, B = odd tokens (prefix tokens alternate too)."""

    unmerged: relax.Expr  # int32 [num_a - r]: kept A tokens, in token order
    merged: relax.Expr  # int32 [r]: A tokens merged away
    onehot: relax.Expr  # [num_b, r] 0/1 (int32): B token each merged A token goes into
    num_a: int
    num_b: int
    protected: int


def protection_mask(num_a: int, num_b: int, protected: int) -> np.ndarray:
    """[num_a, num_b] True where an edge touches a protected prefix token (token 2i is A[i], 2i+1 is B[i])."""
    rows = (np.arange(num_a) < (protected + 1) // 2)[:, None]
    cols = (np.arange(num_b) < protected // 2)[None, :]
    return rows | cols


def match_tokens(em, qkv: relax.Expr, heads: int, r: int, protected: int) -> Match:
    """Bipartite soft matching on the keys of `qkv` int8 [N, 3 * heads * D]: the r most similar A tokens
    merge into B. Metric: keys summed over heads, as int8 unit vectors (Q7) so the cosine scores are an
    int8 matmul on the target's dot-product kernel."""
    from compile.quant.integer_ops import emit_isqrt

    tokens, width = em.shape(qkv)
    dim = width // 3 // heads
    num_a, num_b = (tokens + 1) // 2, tokens // 2
    keys = em.emit(relax.op.strided_slice(relax.op.reshape(qkv, (tokens, 3, heads, dim)), [1], [1], [2]))
    ksum = em.emit(relax.op.sum(relax.op.astype(keys, "int32"), axis=[1, 2]))  # [N, D]
    norm = emit_isqrt(em, em.emit(relax.op.sum(relax.op.multiply(ksum, ksum), axis=1, keepdims=True)))
    norm = em.emit(relax.op.maximum(norm, em.const(1, "int32")))
    unit = em.emit(relax.op.floor_divide(relax.op.left_shift(ksum, em.const(UNIT_BITS, "int32")), norm))
    unit = em.emit(relax.op.astype(relax.op.clip(unit, -127, 127), "int8"))
    a, b = em.rows(unit, 0, tokens, step=2), em.rows(unit, 1, tokens, step=2)
    scores = em.batch_matmul(em.emit(relax.op.expand_dims(a, 0)), em.emit(relax.op.expand_dims(b, 0)),
                             transpose_b=True)
    scores = em.emit(relax.op.where(em.const(protection_mask(num_a, num_b, protected)),
                                    em.const(MASKED, "int32"), relax.op.squeeze(scores, [0])))
    best = em.emit(relax.op.max(scores, axis=1))
    partner = em.emit(relax.op.astype(relax.op.argmax(scores, axis=1), "int32"))
    order = em.emit(relax.op.argsort(best, axis=0, descending=True, dtype="int32"))
    merged = em.rows(order, 0, r)
    unmerged = em.emit(relax.op.sort(em.rows(order, r, num_a), axis=0))
    target = em.emit(relax.op.take(partner, merged, axis=0))  # [r]
    onehot = em.emit(relax.op.astype(
        relax.op.equal(em.const(np.arange(num_b, dtype=np.int32)[:, None]), relax.op.reshape(target, (1, r))), "int32"))
    return Match(unmerged, merged, onehot, num_a, num_b, protected)


def apply_merge(em, match: Match, x: relax.Expr) -> relax.Expr:
    """x [N, C] -> [N - r, C]: merged A rows summed into their B rows; order: protected prefix, kept A, B."""
    tokens = em.shape(x)[0]
    src, dst = em.rows(x, 0, tokens, step=2), em.rows(x, 1, tokens, step=2)
    kept = em.emit(relax.op.take(src, match.unmerged, axis=0))
    moved = em.emit(relax.op.take(src, match.merged, axis=0))
    onehot = match.onehot if x.ty.dtype == "int32" else em.emit(relax.op.astype(match.onehot, x.ty.dtype))
    dst = em.emit(relax.op.add(dst, relax.op.matmul(onehot, moved)))
    keep_a, keep_b = (match.protected + 1) // 2, match.protected // 2
    if keep_b == 0:
        return em.emit(relax.op.concat([kept, dst], axis=0))
    parts = [em.rows(kept, 0, keep_a), em.rows(dst, 0, keep_b), em.rows(kept, keep_a, em.shape(kept)[0]),
             em.rows(dst, keep_b, match.num_b)]
    return em.emit(relax.op.concat(parts, axis=0))


def merged_sums(em, match: Match, x: relax.Expr, size: relax.Expr | None) -> tuple[relax.Expr, relax.Expr]:
    """(sum of x * size, sum of size) over each merged group; size [N, 1] (all ones before the first merge)
    has x's dtype. The numerics divide the two their own way (float, or integer rounding)."""
    if size is None:
        size = em.const(np.ones((em.shape(x)[0], 1), str(x.ty.dtype)))
    return apply_merge(em, match, em.emit(relax.op.multiply(x, size))), apply_merge(em, match, size)
