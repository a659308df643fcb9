"""CPU lowering as its list of phases: fuse -> apply the tuning database -> hand rules -> noalias everywhere.

TVM's default CPU pipeline leaves compute unscheduled (DeiT-tiny: ~1.1 s per image). Here the Relax
module is legalized and fused (GELU with TOPI's vectorizable erf), the tuning database (compile.tuning)
schedules the functions where a tuned schedule measured faster, and the hand rules of compile.schedule
schedule every other function. `dump(phase, mod)` sees the module after each phase (--dump-ir).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import tvm
from tvm import relax, tirx
from tvm.target import Target

from compile.schedule import hand_schedule
from compile.schedule.prim_funcs import rewrite_unscheduled
from compile.schedule.small_work import serial_if_small

if TYPE_CHECKING:
    from tvm.s_tir.meta_schedule.database import Database

DumpIR = Callable[[str, tvm.IRModule], None]


def _schedule_func(func: tirx.PrimFunc, target: Target) -> tirx.PrimFunc:
    sch = hand_schedule(func, target)
    if sch is None:
        return func
    return serial_if_small(func, sch).mod["main"].with_attr("tirx.is_scheduled", True)


@tvm.transform.module_pass(opt_level=0, name="ScheduleForCPU")
class ScheduleForCPU:
    """Apply the first matching hand rule to each PrimFunc that is not scheduled yet."""

    def __init__(self, target: Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_unscheduled(mod, lambda func: _schedule_func(func, self.target))


@tvm.transform.module_pass(opt_level=0, name="MarkNoAlias")
class MarkNoAlias:
    """Declare every PrimFunc's buffers free of aliases (tirx.noalias), as FuseTIR already does for fused ones.

    True of every call the VM makes: call_tir outputs are fresh tensors, and memory planning shares storage only
    between tensors whose lives do not overlap. It matters for all functions at once: TVM 0.27's LLVM codegen
    uses the flag of the module's alphabetically last PrimFunc for every body (CodeGenLLVM::is_restricted_ is
    set when a function is declared, and all are declared before any body is generated). One hand-written
    kernel without it last (softmax_float_*, tome_unit_keys_*) cost every kernel its noalias compute_ function:
    DeiT-tiny int8's p @ v 26 -> 41 us, and which bundles ran slow depended on kernel names.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gv, func in list(mod.functions.items()):
            if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.noalias", False):
                mod[gv] = func.with_attr("tirx.noalias", True)
        return mod


def _legalize_gelu(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """Exact-erf GELU with TOPI's float32-accurate, vectorizable fast_erf instead of libm's erff."""
    from tvm import topi

    def gelu(x):
        return x * (0.5 + 0.5 * topi.fast_erf(x * (1.0 / math.sqrt(2.0))))

    return bb.call_te(gelu, call.args[0], primfunc_name_hint="gelu")


def fuse_for_cpu(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Legalize and fuse `mod` for an llvm target: the unscheduled TIR functions rules and tuning see.

    FastMathTransform and the GELU legalization use TOPI's polynomial exp / erf (float32-accurate
    and vectorizable; libm's erff is a scalar call per element and made GELU a third of the runtime).
    """
    with target:
        return tvm.transform.Sequential([
            relax.transform.FastMathTransform(), relax.transform.LegalizeOps({"relax.nn.gelu": _legalize_gelu}),
            relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(), relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ])(mod)


def schedule_for_cpu(fused: tvm.IRModule, target: Target, database: Database | None = None,
                     dump: DumpIR | None = None) -> tvm.IRModule:
    """Schedule a fused module (fuse_for_cpu) for an llvm target; returns a module for relax.build.

    `database` (a MetaSchedule database, see compile.tuning) schedules the functions whose best
    record for this target is a tuned one; the hand rules schedule everything else.
    """
    dump = dump or (lambda _phase, _mod: None)
    mod = fused
    if database is not None:
        from compile.tuning.apply import ApplyTuningDatabase

        mod = ApplyTuningDatabase(database, target)(mod)
        dump("tuned", mod)
    with target:
        mod = MarkNoAlias()(ScheduleForCPU(target)(mod))
    dump("scheduled", mod)
    return mod
