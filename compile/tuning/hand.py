"""The hand rules' schedule of a tuning task, measured beside the tuned candidates.

Its trace carries a marker annotation on the root block (compiled code is unchanged), so a record
in the database can be told apart: where the fastest record of a function is the hand one, a
build keeps using the hand rules as they are now instead of replaying an older hand schedule.
"""

from __future__ import annotations

from tvm import IRModule, s_tir
from tvm.target import Target

from compile.schedule import hand_schedule

HAND_MARK = "edgevit_hand_schedule"


def hand_candidate(workload: IRModule, target: Target) -> s_tir.Schedule | None:
    """The marked hand schedule of a task's workload ({"main": PrimFunc}); None if no rule applies."""
    sch = hand_schedule(workload["main"], target)
    if sch is None:
        return None
    sch.annotate(sch.get_sblock("root"), HAND_MARK, 1)
    return sch


def is_hand_trace(trace: s_tir.Trace) -> bool:
    """Whether a record's trace is a hand schedule (carries HAND_MARK)."""
    return any(inst.kind.name == "Annotate" and HAND_MARK in list(inst.attrs) for inst in trace.insts)


def uses_tensor_intrinsics(sch: s_tir.Schedule) -> bool:
    """Whether a schedule tensorizes (int8 dot products). Such functions are not tuned: MetaSchedule's
    own x86 dot-product template does not build with LLVM 22 (shared notes), so its candidates for them
    are plain loops that cannot beat the hand schedule."""
    return any(inst.kind.name == "Tensorize" for inst in sch.trace.insts)
