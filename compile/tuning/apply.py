"""ApplyTuningDatabase: schedule functions from the tuning database where tuning beat the hand rules."""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

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
        updates = {}
        for gv, func in mod.functions.items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
                continue
            records = records_for(self.database, workload_of(func), self.target)
            if records and not is_hand_trace(records[0].trace):
                tuned = records[0].as_measure_candidate().sch.mod["main"].without_attr("global_symbol")
                updates[gv] = tuned.with_attrs(func.attrs).with_attr("tirx.is_scheduled", True)
        for gv, func in updates.items():
            mod[gv] = func
        return mod
