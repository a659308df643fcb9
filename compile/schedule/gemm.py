"""GEMM rule: register-blocked, vectorized, parallel schedule for matmul-shaped TIR blocks on CPUs.

Covers dense layers (x[M, K] @ W[K, N] + epilogue) and batched matmuls (attention q @ k^T, p @ v).
The C tile MR x NR lives in a local buffer (registers after LLVM's unroll + vectorize), the
epilogue (bias, GELU, residual add) is inlined into the write-back of that tile, and the outer
tile loops run in parallel. Any M, N, K works: non-divisible tails become predicated iterations.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target

from compile.schedule.analysis import MatmulBlock, find_matmul, vector_lanes


def inline_consumer_chain(sch: s_tir.Schedule, block) -> None:
    """Inline every elementwise consumer (bias, GELU, requantize, reshape...) into `block`, while possible.

    Where the chain forks (two consumers read the same value), one branch is inlined into what comes
    after it until the fork closes, so GELU's x * (1 + erf(x / sqrt 2)) / 2 still ends in the tile write-back.

    A consumer that writes a buffer of another shape (a slice of the rows, say) is left alone:
    TVM accepts inlining it, but the write-back would then run over the whole tile range and write
    out of the smaller buffer's bounds.
    """
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) > 1 and _inline_one(sch, consumers):  # a fork (GELU reads x twice): join it first
            continue
        if len(consumers) != 1:
            return
        produced = sch.get(block).writes[0].source.shape
        if [int(d) for d in sch.get(consumers[0]).writes[0].source.shape] != [int(d) for d in produced]:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except ScheduleError:  # a consumer that cannot be inlined
            return


def _inline_one(sch: s_tir.Schedule, blocks: list) -> bool:
    """Inline the first of `blocks` that can be (into its own consumers); whether one was."""
    for block in blocks:
        try:
            sch.compute_inline(block)
            return True
        except ScheduleError:
            pass
    return False


def schedule_gemm(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
    """Schedule `func` if its main computation is a matmul; None when the rule does not apply."""
    sch = s_tir.Schedule(func)
    found = find_matmul(sch)
    if found is None:
        return None
    gemm: MatmulBlock = found
    lanes = vector_lanes(target, gemm.dtype)
    mr, nr = 4, 2 * lanes  # 8 accumulator registers: 4 rows x 2 vectors
    if gemm.n < lanes:
        nr = gemm.n
    k_chunk = 64

    # Prologue producers (reshape/transpose of inputs) are computed inline where possible.
    for producer in sch.get_producers(gemm.block):
        try:
            sch.compute_inline(producer)
        except ScheduleError:
            pass

    # A vectorized loop with a tail predicate runs scalar: pad N up to whole register tiles; the
    # padded result is then copied out (and the epilogue applied) by the elementwise blocks after it.
    padded = gemm.n % nr != 0
    if padded:
        sch.pad_einsum(gemm.block, [1] * (len(sch.get(gemm.block).iter_vars) - 2) + [nr, 1])
    loops = sch.get_loops(gemm.block)
    *batch, i, j, k = loops
    i_outer, i_inner = sch.split(i, [None, mr])
    j_outer, j_inner = sch.split(j, [None, nr])
    k_outer, k_inner = sch.split(k, [None, min(k_chunk, gemm.k)])
    sch.reorder(*batch, j_outer, i_outer, k_outer, k_inner, i_inner, j_inner)

    write_back = sch.cache_write(gemm.block, 0, "local")
    if not padded:
        inline_consumer_chain(sch, write_back)
    sch.reverse_compute_at(write_back, i_outer, preserve_unit_loops=True)
    outer = sch.fuse(*batch, j_outer) if batch else j_outer
    sch.parallel(outer)
    sch.unroll(i_inner)
    sch.vectorize(j_inner)
    _vectorize_innermost(sch, write_back, lanes)
    init = sch.decompose_reduction(gemm.block, k_outer)
    _vectorize_innermost(sch, init, lanes)
    if padded:
        _schedule_remaining_spatial(sch, gemm.block)
    return sch


def _schedule_remaining_spatial(sch: s_tir.Schedule, gemm_block) -> None:
    """Parallelize and vectorize the padding / unpadding / epilogue blocks around a padded GEMM."""
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        if sch.get(block).name_hint.startswith(sch.get(gemm_block).name_hint):
            continue
        loops = sch.get_loops(block)
        if not loops or sch.get(loops[0]).kind != tirx.ForKind.SERIAL:
            continue
        fused = sch.fuse(*loops)
        sch.parallel(fused)


def _vectorize_innermost(sch: s_tir.Schedule, block, lanes: int) -> None:
    """Vectorize the innermost loop of a spatial block in chunks of `lanes`."""
    inner = sch.get_loops(block)[-1]
    if _extent(sch, inner) > lanes:
        _, inner = sch.split(inner, [None, lanes])
    sch.vectorize(inner)


def _extent(sch: s_tir.Schedule, loop) -> int:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else 0
