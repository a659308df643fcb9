"""ToMe's bookkeeping as hand-written TIR kernels, so a merging block adds a handful of calls (every numerics).

- `tome_unit_keys` (CPUs): each token's keys summed over heads and scaled to a unit vector (int8 keys: an int8 one
  in fixed point; float keys: sum / |sum|), A (even) and B (odd) tokens into two outputs for the score matmul: one
  kernel in place of seven, 20 -> 12.5 us on DeiT-tiny's 197 tokens. The head sums are recomputed in each loop (with
  a scratch row LLVM vectorized only behind runtime alias checks); int32 sums of int8 keys are exact while
  (heads * 127)^2 * D < 2^31. Tokens run in parallel (the pool is still awake from the GEMM before). CUDA keeps
  compile.graph.tome's op chain.
- `tome_destinations`: from the cosine scores [num_a, num_b] (int32 or float32) of A against B tokens, the output
  row of every token: each A token's best B partner (first on ties; protected prefix tokens masked), the r A tokens
  with the highest best score (ties: lower index first) merge into their partner's row, the rest keep their order.
  Output layout: protected A tokens, protected B tokens, other kept A tokens, other B tokens. 99 x 98: 3.4 us.
- `tome_merge`: x [N, C] and size [N, 1] into the rows `dest` gives: every output row starts as a copy of one of
  its tokens, then only the r merged tokens are added into their rows and only those rows become size-weighted
  means (floats times the row's reciprocal, integers round half up: floor((2 sum + s) / (2 s))). One pass, not
  three: DeiT-tiny's 197 x 192 float merge 7.2 -> 3.2 us, int32 65 -> 5.6 us.

Serial loops written as reductions LLVM vectorizes (a parallel region would cost more than the few thousand
operations). Scratch is "global" on CPUs (on the stack, compile.kernels.row_kernels); on CUDA one thread runs it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from compile.kernels import vector_lanes
from compile.kernels.integer_ops import OPAQUE, clip_cast, square_root

MASKED = -(2**31) + 1


def _unit_keys_func(tokens: int, heads: int, dim: int, dtype: str, unit_bits: int, inverse_bits: int,
                    integer_only: bool) -> tvm.tirx.PrimFunc:
    num_a, num_b = (tokens + 1) // 2, tokens // 2
    width = heads * dim  # keys are qkv's columns width .. 2 * width
    integer = dtype == "int8"
    root_steps = square_root(integer_only)  # the same root either way
    sum_dtype, stat_dtype = ("int32", "int64") if integer else (dtype, dtype)

    def key_sum(qkv, n, d):  # the sum over heads of key component d (recomputed: no row buffer)
        return sum(T.Cast(sum_dtype, qkv[n, width + h * dim + d]) for h in range(heads))

    @T.macro
    def unit_row(qkv, n, out, row):
        # integers: squared norm, 2^inverse_bits / norm; floats: squared norm, 1 / norm
        stats = T.sblock_alloc_buffer((2,), stat_dtype, scope="global")
        stats[0] = tvm.tirx.const(0, stat_dtype)
        for d in T.serial(dim):
            stats[0] = stats[0] + T.Cast(stat_dtype, key_sum(qkv, n, d) * key_sum(qkv, n, d))
        if integer:
            root = T.sblock_alloc_buffer((1,), "int64", scope="global")
            root_steps(stats[0], root)
            stats[1] = (T.int64(1) << T.int64(inverse_bits)) // T.max(root[0], T.int64(1))
            for d in T.serial(dim):
                out[0, row, d] = clip_cast((T.Cast("int64", key_sum(qkv, n, d)) * stats[1])
                                           >> T.int64(inverse_bits - unit_bits), -127, 127, "int8")
        else:
            stats[1] = T.Cast(dtype, 1) / T.sqrt(stats[0])
            for d in T.serial(dim):
                out[0, row, d] = key_sum(qkv, n, d) * stats[1]

    @T.prim_func(private=True, s_tir=True)
    def unit_keys(qkv: T.Buffer((tokens, 3 * width), dtype), a: T.Buffer((1, num_a, dim), dtype),
                  b: T.Buffer((1, num_b, dim), dtype)):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            for n in T.parallel(tokens):
                with T.sblock("token"):
                    if n % 2 == 0:
                        unit_row(qkv, n, a, n // 2)
                    else:
                        unit_row(qkv, n, b, n // 2)

    return unit_keys


def emit_unit_keys(em, qkv: relax.Expr, heads: int, unit_bits: int, inverse_bits: int,
                   integer_only: bool) -> tuple[relax.Expr, relax.Expr]:
    """Unit keys of the A and B tokens ([1, num_a, D], [1, num_b, D]) of qkv [N, 3 * heads * D], keys summed over
    heads. int8 qkv: int8 clip((sum) * floor(2^inverse_bits / max(isqrt(|sum|^2), 1)) >> (inverse_bits - unit_bits)),
    integer_only: the square root without floats (int8-full); float qkv: sum / |sum| in its own type."""
    tokens, width = em.shape(qkv)
    dim = width // 3 // heads
    dtype = str(qkv.ty.dtype)
    func = _unit_keys_func(tokens, heads, dim, dtype, unit_bits, inverse_bits, integer_only)
    suffix = "_int" if integer_only and dtype == "int8" else ""
    name = f"tome_unit_keys_{tokens}_{heads}_{dim}{suffix}" if dtype == "int8" else f"tome_unit_keys_{dtype}_{tokens}"
    gv = em.bb.add_func(func, name)
    out = em.emit(relax.call_tir(gv, [qkv], [relax.TensorType((1, (tokens + 1) // 2, dim), dtype),
                                             relax.TensorType((1, tokens // 2, dim), dtype)]))
    return em.emit(relax.TupleGetItem(out, 0)), em.emit(relax.TupleGetItem(out, 1))


def _destinations_func(num_a: int, num_b: int, r: int, protected: int, dtype: str, gpu: bool) -> tvm.tirx.PrimFunc:
    keep_a, keep_b = (protected + 1) // 2, protected // 2
    tokens = num_a + num_b
    kept = num_a - r
    scratch = "local" if gpu else "global"  # CUDA kernels cannot allocate global memory
    masked = tvm.tirx.const(MASKED if dtype == "int32" else -3.0e38, dtype)  # below every score

    @T.prim_func(private=True, s_tir=True)
    def destinations(scores: T.Buffer((num_a, num_b), dtype), dest: T.Buffer((tokens,), "int32")):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            best = T.sblock_alloc_buffer((num_a,), dtype, scope=scratch)
            partner = T.sblock_alloc_buffer((num_a,), "int32", scope=scratch)
            merged = T.sblock_alloc_buffer((num_a,), "int32", scope=scratch)
            top = T.sblock_alloc_buffer((1,), dtype, scope=scratch)  # a running max
            acc = T.sblock_alloc_buffer((1,), "int32", scope=scratch)  # a running min or count
            for _t in T.thread_binding(1, thread="threadIdx.x") if gpu else T.serial(1):
                for a in T.serial(num_a):  # best score (a max, then the first index holding it: two vector loops)
                    best[a] = masked
                    partner[a] = 0
                    if a >= keep_a:
                        top[0] = masked
                        for b in T.serial(num_b - keep_b):
                            top[0] = T.max(top[0], scores[a, b + keep_b])
                        best[a] = top[0]
                        acc[0] = num_b
                        for b in T.serial(num_b - keep_b):
                            acc[0] = T.min(acc[0], T.Select(scores[a, b + keep_b] == best[a], b + keep_b, num_b))
                        partner[a] = T.Select(acc[0] < num_b, acc[0], 0)
                for a in T.serial(num_a):  # merged: fewer than r tokens rank before it
                    acc[0] = 0
                    for other in T.serial(num_a):
                        acc[0] = acc[0] + T.Select(best[other] > best[a] or (best[other] == best[a] and other < a),
                                                       1, 0)
                    merged[a] = T.Select(acc[0] < r, 1, 0)
                acc[0] = 0
                for a in T.serial(num_a):
                    if merged[a] == 1:
                        b = partner[a]
                        dest[2 * a] = T.Select(b < keep_b, keep_a + b, kept + b)
                    else:
                        dest[2 * a] = T.Select(acc[0] >= keep_a, acc[0] + keep_b, acc[0])
                        acc[0] = acc[0] + 1
                for b in T.serial(num_b):
                    dest[2 * b + 1] = T.Select(b < keep_b, keep_a + b, kept + b)

    return destinations


def emit_destinations(em, scores: relax.Expr, r: int, protected: int) -> relax.Expr:
    """Output row of each token (int32 [N]) from the A-vs-B cosine scores ([num_a, num_b], int32 or float32)."""
    num_a, num_b = em.shape(scores)
    dtype = str(scores.ty.dtype)
    func = _destinations_func(num_a, num_b, r, protected, dtype, em.target.kind.name == "cuda")
    suffix = "" if dtype == "int32" else f"_{dtype}"
    gv = em.bb.add_func(func, f"tome_destinations_{num_a}_{num_b}_{r}_{protected}{suffix}")
    return em.emit(relax.call_tir(gv, [scores], relax.TensorType((num_a + num_b,), "int32")))


def _merge_func(tokens: int, out_tokens: int, channels: int, dtype: str, lanes: int, gpu: bool):
    integer = dtype.startswith("int")
    vectors = channels // lanes if channels % lanes == 0 else channels
    width = lanes if channels % lanes == 0 else 1
    scratch = "local" if gpu else "global"

    @T.prim_func(private=True, s_tir=True)
    def merge(x: T.Buffer((tokens, channels), dtype), size: T.Buffer((tokens, 1), dtype),
              dest: T.Buffer((tokens,), "int32"), out: T.Buffer((out_tokens, channels), dtype),
              out_size: T.Buffer((out_tokens, 1), dtype)):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            own = T.sblock_alloc_buffer((out_tokens,), "int32", scope=scratch)  # a token of each row
            for _t in T.thread_binding(1, thread="threadIdx.x") if gpu else T.serial(1):
                for j in T.serial(tokens):  # a row's own token: the last one sent to it (any would do)
                    own[dest[j]] = j
                for i in T.serial(out_tokens):  # every row: a copy of its own token
                    out_size[i, 0] = size[own[i], 0]
                    for v in T.serial(vectors):
                        for w in T.vectorized(width):
                            out[i, v * width + w] = x[own[i], v * width + w]
                for j in T.serial(tokens):  # the r merged tokens into their row, weighted by size
                    if own[dest[j]] != j:
                        if out_size[dest[j], 0] == size[own[dest[j]], 0]:  # the row's first merge: weight its own
                            for v in T.serial(vectors):
                                for w in T.vectorized(width):
                                    out[dest[j], v * width + w] = out[dest[j], v * width + w] * size[own[dest[j]], 0]
                        out_size[dest[j], 0] = out_size[dest[j], 0] + size[j, 0]
                        for v in T.serial(vectors):
                            for w in T.vectorized(width):
                                out[dest[j], v * width + w] = out[dest[j], v * width + w] + x[j, v * width + w] * size[j, 0]
                for i in T.serial(out_tokens):  # rows that took merges: the size-weighted mean
                    if out_size[i, 0] != size[own[i], 0]:
                        for v in T.serial(vectors):
                            for w in T.vectorized(width):
                                if integer:
                                    out[i, v * width + w] = T.floordiv(2 * out[i, v * width + w] + out_size[i, 0],
                                                                       2 * out_size[i, 0])
                                else:  # a multiply by the row's reciprocal, not a division per element
                                    out[i, v * width + w] = out[i, v * width + w] * (T.float32(1) / out_size[i, 0])

    return merge


def emit_merge(em, x: relax.Expr, size: relax.Expr | None, dest: relax.Expr, r: int) -> tuple[relax.Expr, relax.Expr]:
    """(merged x [N - r, C], merged size [N - r, 1]): size-weighted means of the tokens sharing a row."""
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
