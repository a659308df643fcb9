"""The hand schedule rules for CPU kernels, and the order in which they are tried.

Each fused TIR function (compile.lowering.cpu) goes to the first rule that applies: packed int8 GEMM
and its correction sums (compile.kernels), GEMM (dense layers and attention matmuls), dlight's CPU
reduction rule (average pooling; softmax and LayerNorm are hand-written row kernels, compile.kernels),
and a parallel + vectorized fallback for the elementwise / layout functions. A tuning database (compile.tuning) takes
precedence for the functions where a tuned schedule measured faster than these rules.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from compile.schedule.elementwise import schedule_elementwise
from compile.schedule.gemm import schedule_gemm
from compile.schedule.int8_correction import schedule_int8_correction
from compile.schedule.int8_gemm import schedule_int8_gemm

# Tried in this order: the most specific patterns first.
RULES = (schedule_int8_gemm, schedule_int8_correction, schedule_gemm)


def hand_schedule(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
    """The schedule of the first rule that applies to `func`, None when none does.

    Returned as a Schedule because its trace is what tuning measures and records as the hand
    schedule of a function (compile.tuning compares tuned candidates against it).
    """
    import tvm.s_tir.dlight as dl

    for rule in RULES:
        sch = rule(func, target)
        if sch is not None:
            return sch
    for dl_rule in (dl.cpu.Reduction(), dl.cpu.GEMV()):
        sch = dl_rule.apply(func, target, False)
        if sch is not None:
            return sch[0] if isinstance(sch, list) else sch
    return schedule_elementwise(func, target)
