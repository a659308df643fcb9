"""Int8 correction rule: the column sums that undo a shifted activation (compile.kernels.packed_gemm).

A function of its own (rhs_correction: -shift * sum_k b[..., k, n]), small next to its GEMM
(N x K adds); dlight's CPU reduction rule passes it by. Its output columns run in parallel and the
reduction stays an inner loop, which LLVM vectorizes when it is contiguous (b [.., N, K]).
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
    *columns, _ = sch.get_loops(sums[0])
    sch.parallel(sch.fuse(*columns) if len(columns) > 1 else columns[0])
    return sch
