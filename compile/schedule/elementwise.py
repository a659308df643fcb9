"""Fallback rule for functions without a reduction (layout changes, elementwise math).

Every block is inlined into the last one where possible; the output loops are fused, split
into parallel chunks and vectorized along the innermost axis.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target

from compile.schedule.analysis import has_root, store_dtype, vector_lanes


def schedule_elementwise(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
    """Parallel + vectorized schedule for a reduction-free function; None if it has a reduction."""
    sch = s_tir.Schedule(func)
    if not has_root(sch):
        return None
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for block in blocks:
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(block).iter_vars):
            return None
    for block in blocks[:-1]:
        try:
            sch.compute_inline(block)
        except ScheduleError:  # blocks that cannot be inlined stay as they are
            pass
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(block)
        if not loops:
            continue
        fused = sch.fuse(*loops)
        extent = sch.get(fused).extent
        lanes = vector_lanes(target, store_dtype(sch.get(block)))
        if isinstance(extent, tirx.IntImm) and int(extent) >= 4 * lanes:
            outer, inner = sch.split(fused, [None, lanes])
            sch.vectorize(inner)
            sch.parallel(outer)
        else:
            sch.parallel(fused)
    return sch
