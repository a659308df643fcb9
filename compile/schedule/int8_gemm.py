"""Int8 GEMM rule: tiles and tensorizes the packed GEMMs that compile.kernels emits for CPU targets.

Only functions holding a block tagged `edgevit.int8` = "gemm" (compile.kernels.packed_gemm) match,
so FP32 matmuls never do. The GEMM runs over whole register tiles (rows x vectors * lanes, the
padding was done by the packing stages): the tile's int32 accumulators are a tile-sized buffer
that LLVM keeps in registers, the inner dot product is the target's instruction (tensorize), and the
write-back of each tile is the `out` stage with the caller's fused epilogue (bias, scales,
requantize, ...) inlined into it, so no int32 tensor goes to memory. The outer tile loops run in
parallel; the packing stages are parallel loops before the GEMM. A GEMM too small to pay for the
thread pool's start and join (the classifier head, M = 1) runs on one thread.
"""

from __future__ import annotations

import math

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target

from compile.kernels import amx
from compile.kernels.arm_tiles import PARTIAL_SUM_INTRIN, interleave_intrinsic, tile_intrinsic
from compile.kernels.dot_kernel import DotKernel, kernel_by_name
from compile.kernels.narrow_multipliers import INT32_PARAMS
from compile.kernels.packed_gemm import KERNEL, ROLE, TILE
from compile.schedule.analysis import has_root, store_dtype, vector_lanes
from compile.schedule.gemm import inline_consumer_chain

PARALLEL_MIN_MACS = 1 << 20  # about 5 us on one core; a parallel region costs a few us to start and join


def _role(sch: s_tir.Schedule, block) -> str | None:
    role = sch.get(block).annotations.get(ROLE)
    return None if role is None else str(role)


def _blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _by_role(sch: s_tir.Schedule, role: str) -> list:
    return [block for block in _blocks(sch) if _role(sch, block) == role]


def schedule_int8_gemm(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
    """Schedule `func` if it holds a packed int8 GEMM; None when the rule does not apply."""
    sch = s_tir.Schedule(func)
    if not has_root(sch):
        return None
    gemms = _by_role(sch, "gemm")
    if len(gemms) != 1:
        return None
    gemm = gemms[0]
    annotations = sch.get(gemm).annotations
    kernel = kernel_by_name(str(annotations[KERNEL]))
    rows, vectors = (int(v) for v in annotations[TILE])
    out = _by_role(sch, "out")[0]
    parallel = math.prod(int(iv.dom.extent) for iv in sch.get(gemm).iter_vars) >= PARALLEL_MIN_MACS

    tail = _inline_epilogue(sch, out, target)
    _inline_prologue(sch)
    leftovers = [block for block in _blocks(sch) if _role(sch, block) is None]
    packs = [(block, _role(sch, block)) for block in _blocks(sch) if (_role(sch, block) or "").startswith("pack")]
    if kernel.tile_unit:
        _panel_gemm(sch, gemm, out, vector_lanes(target, "int32"), parallel)
    else:
        _tile_gemm(sch, gemm, out, kernel, rows, vectors, vector_lanes(target, "int32"), parallel)
    if tail is not None:
        _schedule_tail(sch, tail, out, vector_lanes(target, "int32"))
    for block, role in packs:
        _schedule_pack(sch, block, role, kernel, target, parallel)
    for block in leftovers:
        _parallel_vectorized(sch, block, target, parallel)
    _int32_params(sch, func, target)
    return sch


def _int32_params(sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target) -> None:
    """The int64 parameters compile.kernels.narrow_multipliers found int32-sized, copied once a call into int32
    buffers the epilogue sign-extends: a product of two sign-extended int32 is a widening multiply."""
    for index in func.attrs.get(INT32_PARAMS, []) if func.attrs is not None else []:
        param = func.params[int(index)]  # a parameter is its buffer
        for block in [*_by_role(sch, "out"), *_by_role(sch, "tail")]:
            reads = [region.source for region in sch.get(block).reads]
            position = next((i for i, b in enumerate(reads) if b.same_as(param)), None)
            if position is not None:
                narrow = sch.cache_read(block, position, "global")
                sch.unsafe_set_dtype(narrow, 0, "int32")
                _parallel_vectorized(sch, narrow, target, False)


def _inline_epilogue(sch: s_tir.Schedule, out, target: Target):
    """Inline the epilogue into the tile write-back `out`; returns its int64 part as a block of its own, or None.

    On aarch64 (no 64-bit vector multiply) int8-full's requantization int64(acc + bias) * multiplier would
    run lane by lane: LLVM widens an int32 sum before the product, and a product of a widened sum is no
    widening multiply. So the int32 part stays in `out`, stored to a tile buffer, and the int64 part (the
    tail) reads it back in a loop over the tile's rows: int64(loaded int32) * multiplier is SMULL (the
    multipliers as int32: compile.kernels.narrow_multipliers). Elsewhere the whole epilogue goes into `out`.
    """
    if "aarch64" not in str(target.attrs.get("mtriple", "")):
        inline_consumer_chain(sch, out)
        return None
    shape = [int(d) for d in sch.get(out).writes[0].source.shape]
    while True:
        consumers = sch.get_consumers(out)
        if len(consumers) != 1 or [int(d) for d in sch.get(consumers[0]).writes[0].source.shape] != shape:
            break
        if store_dtype(sch.get(consumers[0])) == "int64":
            tail = consumers[0]
            inline_consumer_chain(sch, tail)
            sch.annotate(tail, ROLE, "tail")
            return tail
        if store_dtype(sch.get(consumers[0])) != "int32":
            break
        try:
            sch.reverse_compute_inline(consumers[0])
        except ScheduleError:
            break
    inline_consumer_chain(sch, out)
    return None


def _schedule_tail(sch: s_tir.Schedule, tail, out, lanes: int) -> None:
    """The int64 tail of the epilogue right after the tile's write-back: a loop over its rows (the int32 tile
    stays in memory, so each value reaches the product as a load), columns vectorized."""
    sch.reverse_compute_at(tail, sch.get_loops(out)[0], preserve_unit_loops=True)  # in the tile loop, after `out`
    *_, columns = sch.get_loops(tail)
    n_extent = int(sch.get(tail).iter_vars[-1].dom.extent)
    if n_extent % lanes == 0:
        sch.vectorize(sch.split(columns, [None, lanes])[1])


def _inline_prologue(sch: s_tir.Schedule) -> None:
    """Inline untagged producers (an activation's requantize fused in by Relax) into their consumers."""
    for block in _blocks(sch):
        if _role(sch, block) is None:
            try:
                sch.compute_inline(block)
            except ScheduleError:  # outputs and non-inlinable blocks stay
                pass


def _parallel(sch: s_tir.Schedule, loops: list, enabled: bool) -> None:
    """Fuse `loops` (outermost first) and run them in parallel when `enabled`."""
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if enabled:
        sch.parallel(fused)


def _tile_gemm(sch: s_tir.Schedule, gemm, out, kernel: DotKernel, rows: int, vectors: int, lanes: int,
               parallel: bool) -> None:
    """Register-tile the GEMM, tensorize its dot products, write each tile back through `out`."""
    if kernel.tile_intrin is not None:
        _register_tile_gemm(sch, gemm, out, kernel, rows, vectors, lanes, parallel)
        return
    *batch, m, n, k = sch.get_loops(gemm)
    m_outer, m_inner = sch.split(m, [None, rows])
    n_outer, n_vector, n_lane = sch.split(n, [None, vectors, kernel.lanes])
    k_outer, k_inner = sch.split(k, [None, kernel.depth])
    if kernel.intrin is None:
        sch.reorder(*batch, n_outer, m_outer, k_outer, k_inner, m_inner, n_vector, n_lane)
    else:
        sch.reorder(*batch, n_outer, m_outer, k_outer, m_inner, n_vector, n_lane, k_inner)
    sch.reverse_compute_at(out, m_outer, preserve_unit_loops=True)
    _parallel(sch, [*batch, n_outer, m_outer], parallel)
    sch.unroll(m_inner)
    if kernel.intrin is None:  # vectorized over the tile's columns (a reduction block: before decomposing)
        sch.vectorize(sch.fuse(n_vector, n_lane))
    init = sch.decompose_reduction(gemm, k_outer)
    if kernel.intrin is None:
        _, init_rows, init_columns = sch.get_loops(init)
    else:
        sch.unroll(n_vector)
        sch.tensorize(n_lane, kernel.intrin)
        _, init_rows, init_vectors, init_columns = sch.get_loops(init)
        sch.unroll(init_vectors)
    sch.unroll(init_rows)
    sch.vectorize(init_columns)
    # The accumulators: a tile-sized buffer the schedule keeps in the tile loop. TVM's CPU lowering
    # puts "global" buffers under 1 KB on the stack (where LLVM keeps them in registers) and any
    # other one in a workspace allocated per tile, so global it stays (DotKernel tiles fit 1 KB).
    _write_back(sch, out, kernel, vectors, lanes)


def _register_tile_gemm(sch: s_tir.Schedule, gemm, out, kernel: DotKernel, rows: int, vectors: int, lanes: int,
                        parallel: bool) -> None:
    """One tensor intrinsic per register tile and 16 k (compile.kernels.arm_tiles); a kernel with partial lanes
    adds them per tile after K (`partial_sum`, 4 columns an intrinsic), before the tile's write-back."""
    if kernel.partial_lanes > 1:
        *batch, m, n, lane, k_outer, step = sch.get_loops(gemm)
        inner_k = [lane, step]
    else:
        *batch, m, n, k = sch.get_loops(gemm)
        k_outer, k_inner = sch.split(k, [None, kernel.k_block])
        inner_k = [k_inner]
    m_outer, m_inner = sch.split(m, [None, rows])
    n_outer, n_inner = sch.split(n, [None, vectors * kernel.lanes])
    sch.reorder(*batch, n_outer, m_outer, k_outer, m_inner, n_inner, *inner_k)
    summed = _by_role(sch, "partial_sum")
    for stage in (*summed, out):
        sch.reverse_compute_at(stage, m_outer, preserve_unit_loops=True)
    _parallel(sch, [*batch, n_outer, m_outer], parallel)
    init = sch.decompose_reduction(gemm, k_outer)
    sch.tensorize(m_inner, tile_intrinsic(kernel.tile_intrin, rows, vectors))
    init_rows, init_columns, *init_lanes = sch.get_loops(init)[-(2 + len(summed)):]
    sch.unroll(init_rows)
    if init_lanes:  # partial sums: a vector each
        sch.unroll(init_columns)
        sch.vectorize(init_lanes[0])
    else:
        columns_outer, columns_inner = sch.split(init_columns, [None, kernel.lanes])
        sch.unroll(columns_outer)
        sch.vectorize(columns_inner)
    for stage in summed:
        *_, sum_rows, sum_columns, _ = sch.get_loops(stage)
        sum_outer, sum_inner = sch.split(sum_columns, [None, 4])
        sum_init = sch.decompose_reduction(stage, sum_inner)
        sch.tensorize(sum_inner, PARTIAL_SUM_INTRIN)
        sch.unroll(sum_rows)
        sch.unroll(sum_outer)
        sch.vectorize(sch.get_loops(sum_init)[-1])
    _write_back(sch, out, kernel, vectors, lanes)


def _write_back(sch: s_tir.Schedule, out, kernel: DotKernel, vectors: int, lanes: int) -> None:
    """The tile's write-back (`out` and the epilogue inlined into it): rows unrolled, columns in vectors."""
    n_extent = int(sch.get(out).iter_vars[-1].dom.extent)
    if n_extent % (vectors * kernel.lanes) != 0:
        # The last column tile is partial: a vectorized store under a per-lane predicate would run
        # scalar in every tile. Left as plain loops, LLVM vectorizes them with masked stores.
        return
    *_, out_rows, out_columns = sch.get_loops(out)
    columns_outer, columns_inner = sch.split(out_columns, [None, lanes])
    sch.unroll(out_rows)
    sch.unroll(columns_outer)
    sch.vectorize(columns_inner)


def _panel_gemm(sch: s_tir.Schedule, gemm, out, lanes: int, parallel: bool) -> None:
    """AMX: column panels (every row x 32 columns) in parallel, each one tensor intrinsic whose result the
    panel's `out` (with the fused epilogue) reads back from L1 (compile.kernels.amx)."""
    *batch, m, n, k = sch.get_loops(gemm)
    n_outer, n_inner = sch.split(n, [None, amx.PANEL_COLUMNS])
    sch.reorder(*batch, n_outer, m, n_inner, k)
    sch.reverse_compute_at(out, n_outer, preserve_unit_loops=True)
    _parallel(sch, [*batch, n_outer], parallel)
    init = sch.decompose_reduction(gemm, m)
    lhs = sch.get(_by_role(sch, "pack_lhs")[0]).writes[0].source
    m_pad, k_pad = (int(extent) for extent in lhs.shape[-2:])
    zero, update = amx.panel_intrinsics(str(lhs.dtype), m_pad, k_pad)
    sch.tensorize(sch.get_loops(init)[-2], zero)
    sch.tensorize(m, update)
    n_extent = int(sch.get(out).iter_vars[-1].dom.extent)
    if n_extent % amx.PANEL_COLUMNS == 0:  # else a partial last panel: plain loops, masked by LLVM
        *_, out_columns = sch.get_loops(out)
        sch.vectorize(sch.split(out_columns, [None, lanes])[1])


def _schedule_pack(sch: s_tir.Schedule, block, role: str, kernel: DotKernel, target: Target,
                   parallel: bool) -> None:
    """Packing stages: zero padding split off where it is a box (so the copy has no condition), loops
    ordered to read the source contiguously, the innermost contiguous axis vectorized; a B [K, N] of an
    interleaving kernel packed a tile's columns x depth at a time (compile.kernels.arm_tiles)."""
    loops = sch.get_loops(block)
    if (role == "pack_rhs_pad" or _pads_inner_axis(sch, block)) and sch.can_decompose_padding(block, loops[0]):
        _parallel_vectorized(sch, sch.decompose_padding(block, loops[0]), target, parallel)
    if role == "pack_rhs_nk":  # b [.., N, K]: per column n, the K bytes of one row
        *lead, tile, group, column, element = sch.get_loops(block)
        sch.reorder(tile, column, group, element)
        _parallel(sch, [*lead, tile, column], parallel)
        sch.vectorize(element)
    elif role == "pack_rhs_int4":  # int4 nibbles widened: steps by pairs (constant shifts), NR x D bytes a vector
        *lead, tile, step, column, element = sch.get_loops(block)
        pair, parity = sch.split(step, [None, 2])
        _parallel(sch, [*lead, tile, pair], parallel)
        sch.vectorize(sch.fuse(column, element))
        sch.unroll(parity)
    elif role == "pack_rhs_kn":  # b [.., K, N]: 4 rows interleaved into groups of 4 bytes
        *lead, tile, group, column, element = sch.get_loops(block)
        if kernel.interleave_rhs:  # a tile's groups in a serial loop: its addresses step, no division per group
            _parallel(sch, [*lead, tile], parallel)
            extents = [int(sch.get(loop).extent) for loop in (column, element)]
            sch.tensorize(column, interleave_intrinsic(extents[1], extents[0]))
        else:
            _parallel(sch, [*lead, tile, group], parallel)
            sch.unroll(element)
    else:
        _parallel_vectorized(sch, block, target, parallel)


def _pads_inner_axis(sch: s_tir.Schedule, block) -> bool:
    """Whether a packing stage's zero-padding test depends on its innermost axis (K not a multiple
    of the dot depth): then the test would make the vectorized copy run scalar."""
    stmt = sch.get(block)
    value = stmt.body.value
    if not (isinstance(value, tvm.ir.expr.Call) and value.op.name.endswith("if_then_else")):
        return False
    inner = stmt.iter_vars[-1].var
    return any(var.same_as(inner) for var in tirx.analysis.undefined_vars(value.args[0]))


def _parallel_vectorized(sch: s_tir.Schedule, block, target: Target, parallel: bool) -> None:
    """A spatial block at the root: outer loops fused (parallel if `parallel`), the innermost loop
    vectorized when whole vectors divide it (otherwise left to LLVM's loop vectorizer)."""
    loops = sch.get_loops(block)
    if not loops or sch.get(loops[0]).kind != tirx.ForKind.SERIAL:
        return  # already placed (under the GEMM's tile loop)
    if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(block).iter_vars):
        return
    *outer, inner = loops
    if outer:
        _parallel(sch, outer, parallel)
    lanes = vector_lanes(target, store_dtype(sch.get(block)))
    extent = sch.get(inner).extent
    if isinstance(extent, tirx.IntImm) and int(extent) % lanes == 0:
        if int(extent) > lanes:
            _, inner = sch.split(inner, [None, lanes])
        sch.vectorize(inner)
