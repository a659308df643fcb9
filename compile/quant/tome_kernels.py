"""ToMe's bookkeeping as two hand-written TIR kernels, so a merging block adds a handful of calls.

- `tome_destinations`: from the cosine scores [num_a, num_b] of A tokens (even) against B tokens
  (odd), the output row of every token: each A token's best B partner (first on ties; protected
  prefix tokens masked), the r A tokens with the highest best score (ties: lower index first, a stable
  descending sort) merge into their partner's row, the rest keep their order. Output layout: protected
  A tokens, protected B tokens, other kept A tokens, other B tokens.
- `tome_merge`: x [N, C] and size [N, 1] summed into their rows of the output (x weighted by size), then
  the size-weighted mean in place: a float division, or for integers round half up, floor((2 sum + s) / (2 s)).

Serial loops (the work is a few thousand operations; the merge's channel loop is vectorized): with
the thread pool asleep between kernels a parallel region would cost more than the work. On CUDA
targets the same code runs on one thread.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from compile.quant.integer_ops import OPAQUE

MASKED = -(2**31) + 1


def _destinations_func(num_a: int, num_b: int, r: int, protected: int, gpu: bool) -> tvm.tirx.PrimFunc:
    keep_a, keep_b = (protected + 1) // 2, protected // 2
    tokens = num_a + num_b
    kept = num_a - r
    scratch = "local" if gpu else "global"  # CUDA kernels cannot allocate global memory

    @T.prim_func(private=True, s_tir=True)
    def destinations(scores: T.Buffer((num_a, num_b), "int32"), dest: T.Buffer((tokens,), "int32")):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            best = T.sblock_alloc_buffer((num_a,), "int32", scope=scratch)
            partner = T.sblock_alloc_buffer((num_a,), "int32", scope=scratch)
            merged = T.sblock_alloc_buffer((num_a,), "int32", scope=scratch)
            count = T.sblock_alloc_buffer((1,), "int32", scope="local")
            for _t in T.thread_binding(1, thread="threadIdx.x") if gpu else T.serial(1):
                for a in T.serial(num_a):
                    best[a] = MASKED
                    partner[a] = 0
                    if a >= keep_a:
                        for b in T.serial(num_b - keep_b):
                            if scores[a, b + keep_b] > best[a]:
                                best[a] = scores[a, b + keep_b]
                                partner[a] = b + keep_b
                for a in T.serial(num_a):  # merged: fewer than r tokens rank before it
                    count[0] = 0
                    for other in T.serial(num_a):
                        if best[other] > best[a] or (best[other] == best[a] and other < a):
                            count[0] = count[0] + 1
                    merged[a] = T.Select(count[0] < r, 1, 0)
                count[0] = 0
                for a in T.serial(num_a):
                    if merged[a] == 1:
                        b = partner[a]
                        dest[2 * a] = T.Select(b < keep_b, keep_a + b, kept + b)
                    else:
                        dest[2 * a] = T.Select(count[0] >= keep_a, count[0] + keep_b, count[0])
                        count[0] = count[0] + 1
                for b in T.serial(num_b):
                    dest[2 * b + 1] = T.Select(b < keep_b, keep_a + b, kept + b)

    return destinations


def emit_destinations(em, scores: relax.Expr, r: int, protected: int) -> relax.Expr:
    """Output row of each token (int32 [N]) from the A-vs-B cosine scores (int32 [num_a, num_b])."""
    num_a, num_b = em.shape(scores)
    func = _destinations_func(num_a, num_b, r, protected, em.target.kind.name == "cuda")
    gv = em.bb.add_func(func, f"tome_destinations_{num_a}_{num_b}_{r}_{protected}")
    return em.emit(relax.call_tir(gv, [scores], relax.TensorType((num_a + num_b,), "int32")))


def _merge_func(tokens: int, out_tokens: int, channels: int, dtype: str, lanes: int, gpu: bool):
    integer = dtype.startswith("int")
    vectors = channels // lanes if channels % lanes == 0 else channels
    width = lanes if channels % lanes == 0 else 1

    @T.prim_func(private=True, s_tir=True)
    def merge(x: T.Buffer((tokens, channels), dtype), size: T.Buffer((tokens, 1), dtype),
              dest: T.Buffer((tokens,), "int32"), out: T.Buffer((out_tokens, channels), dtype),
              out_size: T.Buffer((out_tokens, 1), dtype)):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            for _t in T.thread_binding(1, thread="threadIdx.x") if gpu else T.serial(1):
                for i, v in T.grid(out_tokens, vectors):
                    for w in T.vectorized(width):
                        out[i, v * width + w] = T.Cast(dtype, 0)
                for i in T.serial(out_tokens):
                    out_size[i, 0] = T.Cast(dtype, 0)
                for j in T.serial(tokens):
                    out_size[dest[j], 0] = out_size[dest[j], 0] + size[j, 0]
                    for v in T.serial(vectors):
                        for w in T.vectorized(width):
                            out[dest[j], v * width + w] = out[dest[j], v * width + w] + x[j, v * width + w] * size[j, 0]
                for i, v in T.grid(out_tokens, vectors):
                    for w in T.vectorized(width):
                        if integer:
                            out[i, v * width + w] = T.floordiv(2 * out[i, v * width + w] + out_size[i, 0],
                                                               2 * out_size[i, 0])
                        else:
                            out[i, v * width + w] = out[i, v * width + w] / out_size[i, 0]

    return merge


def emit_merge(em, x: relax.Expr, size: relax.Expr | None, dest: relax.Expr, r: int) -> tuple[relax.Expr, relax.Expr]:
    """(merged x [N - r, C], merged size [N - r, 1]): size-weighted means of the tokens sharing a row."""
    from compile.schedule.analysis import vector_lanes

    tokens, channels = em.shape(x)
    dtype = str(x.ty.dtype)
    if size is None:
        size = em.const(np.ones((tokens, 1), dtype))
    gpu = em.target.kind.name == "cuda"
    lanes = 1 if gpu else vector_lanes(em.target, dtype)
    func = _merge_func(tokens, tokens - r, channels, dtype, lanes, gpu)
    gv = em.bb.add_func(func, f"tome_merge_{dtype}_{tokens}_{r}")
    out = em.emit(relax.call_tir(gv, [x, size, dest], [relax.TensorType((tokens - r, channels), dtype),
                                                     relax.TensorType((tokens - r, 1), dtype)]))
    return em.emit(relax.TupleGetItem(out, 0)), em.emit(relax.TupleGetItem(out, 1))
