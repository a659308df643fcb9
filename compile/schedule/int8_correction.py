"""Int8 correction rule: the column sums that undo a shifted activation (compile.kernels.packed_gemm).

A function of its own (rhs_correction: -shift * sum_k b[..., k, n]), small next to its GEMM
(N x K adds); dlight's CPU reduction rule passes it by. With b [.., N, K] its output columns run in
parallel and the reduction stays an inner loop, which LLVM vectorizes (contiguous); with b [.., K, N]
(attention's p @ v) the columns are the inner loop (which LLVM vectorizes) and K the loop around them: a strided
reduction per column ran scalar (DeiT-tiny's p @ v correction 135 k -> a few k instructions on the A76).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target

from compile.kernels.packed_gemm import ROLE
from compile.schedule.analysis import has_root


def schedule_int8_correction(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
    """Schedule `func` if it is an rhs_correction; None when the rule does not apply."""
    sch = s_tir.Schedule(func)
    if not has_root(sch):
        return None
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    sums = [block for block in blocks if str(sch.get(block).annotations.get(ROLE, "")) == "correction"]
    if len(sums) != 1:
        return None
    for block in blocks:  # an elementwise producer Relax fused in (b's requantize) is computed inline
        if not block.same_as(sums[0]):
            try:
                sch.compute_inline(block)
            except ScheduleError:  # a block that cannot be inlined stays
                pass
    *columns, k = sch.get_loops(sums[0])
    stmt = sch.get(sums[0])
    last_index = stmt.reads[0].region[-1].min
    if any(v.same_as(stmt.iter_vars[-1].var) for v in tirx.analysis.undefined_vars(last_index)):  # b [.., N, K]
        sch.parallel(sch.fuse(*columns) if len(columns) > 1 else columns[0])
        return sch
    sch.reorder(*columns[:-1], k, columns[-1])  # the columns innermost: LLVM vectorizes them
    sch.decompose_reduction(sums[0], k)
    return sch
