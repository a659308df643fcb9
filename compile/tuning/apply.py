"""ApplyTuningDatabase: schedule functions from the tuning database where tuning beat the hand rules."""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from compile.schedule.prim_funcs import rewrite_unscheduled
from compile.tuning.database import records_for, workload_of
from compile.tuning.hand import is_hand_trace


@tvm.transform.module_pass(opt_level=0, name="ApplyTuningDatabase")
class ApplyTuningDatabase:
    """Replay the fastest record of each unscheduled function when it is a tuned one for `target`.

    Where the fastest record is the hand schedule (or there is none), the function is left for the
    hand rules, which then apply as they are now. Replayed functions keep their attributes (not
    MetaSchedule's workload name) and are marked scheduled.
    """

    def __init__(self, database: ms.database.Database, target: Target):
        self.database = database
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_unscheduled(mod, self._tuned)

    def _tuned(self, func: tirx.PrimFunc) -> tirx.PrimFunc | None:
        records = records_for(self.database, workload_of(func), self.target)
        if not records or is_hand_trace(records[0].trace):
            return None
        tuned = records[0].as_measure_candidate().sch.mod["main"].without_attr("global_symbol")
        return tuned.with_attrs(func.attrs).with_attr("tirx.is_scheduled", True)
