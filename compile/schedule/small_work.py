"""Small kernels run on the calling thread: waking the thread pool costs more than they take.

With the pool's threads asleep between kernels (TVM_THREAD_POOL_SPIN_COUNT=0, as when several
runtimes share the cores), every parallel region pays a wake-up of roughly 10-25 us; the ToMe
index kernels and row gathers of a ViT do a few microseconds of work each. A function whose largest
block has fewer than PARALLEL_MIN_WORK iterations gets its schedule replayed without `parallel`.

The threshold is set for TVM's default, spinning pool (a wake-up then costs ~1 us). Measured interleaved on
2 threads (AMD EPYC), 2^16 against 2^18: int8 6.23 -> 5.49 ms, int8 ToMe r=8 5.35 -> 5.02 ms, FP32
18.7 -> 17.6 ms; with TVM_THREAD_POOL_SPIN_COUNT=0, int8 ToMe r=8 8.19 -> 8.41 ms (softmax and
LayerNorm of 100-200 tokens go parallel and pay the wake-up).
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError

PARALLEL_MIN_WORK = 1 << 16


def loop_work(sch: s_tir.Schedule) -> int:
    """Iterations of the largest block's iteration domain (spatial x reduction)."""
    largest = 0
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        extents = [iv.dom.extent for iv in sch.get(block).iter_vars]
        if extents and all(isinstance(e, tirx.IntImm) for e in extents):
            largest = max(largest, math.prod(int(e) for e in extents))
    return largest


def serial_if_small(func: tirx.PrimFunc, sch: s_tir.Schedule) -> s_tir.Schedule:
    """`sch` (a schedule of `func`), or the same schedule without its parallel loops when `func` is small."""
    try:
        work = loop_work(s_tir.Schedule(func))
    except ScheduleError:  # a function without a root block: leave it
        return sch
    if not 0 < work < PARALLEL_MIN_WORK:
        return sch
    insts = [inst for inst in sch.trace.insts if inst.kind.name != "Parallel"]
    serial = s_tir.Schedule(func)
    s_tir.schedule.Trace(insts, {}).apply_to_schedule(serial, remove_postproc=False)
    return serial
