"""CPU lowering: the Relax module legalized, fused, and every TIR function given a real schedule.

TVM's default CPU pipeline leaves compute unscheduled (DeiT-tiny: ~1.1 s per image). Here each
fused function goes to the first rule that applies: packed int8 GEMM and its correction sums
(compile.kernels), GEMM (dense layers and attention matmuls), row reductions with an elementwise
tail (softmax, LayerNorm), dlight's CPU reduction rule (other reductions), and a parallel +
vectorized fallback for the elementwise / layout functions. A tuning database (compile.tuning) takes precedence for the
functions where a tuned schedule measured faster than these rules.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import tvm
from tvm import relax, s_tir, tirx
from tvm.target import Target

from compile.schedule.elementwise import schedule_elementwise
from compile.schedule.gemm import schedule_gemm
from compile.schedule.small_work import serial_if_small
from compile.schedule.int8_correction import schedule_int8_correction
from compile.schedule.int8_gemm import schedule_int8_gemm
from compile.schedule.row_reduction import schedule_row_reduction

if TYPE_CHECKING:
    from tvm.s_tir.meta_schedule.database import Database


def hand_schedule(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
    """The schedule of the first rule that applies to `func`, None when none does.

    Returned as a Schedule because its trace is what tuning measures and records as the hand
    schedule of a function (compile.tuning compares tuned candidates against it).
    """
    import tvm.s_tir.dlight as dl

    for rule in (schedule_int8_gemm, schedule_int8_correction, schedule_gemm, schedule_row_reduction):
        sch = rule(func, target)
        if sch is not None:
            return sch
    for dl_rule in (dl.cpu.Reduction(), dl.cpu.GEMV()):
        sch = dl_rule.apply(func, target, False)
        if sch is not None:
            return sch[0] if isinstance(sch, list) else sch
    return schedule_elementwise(func, target)


def _schedule_func(func: tirx.PrimFunc, target: Target) -> tirx.PrimFunc:
    sch = hand_schedule(func, target)
    if sch is None:
        return func
    return serial_if_small(func, sch).mod["main"].with_attr("tirx.is_scheduled", True)


@tvm.transform.module_pass(opt_level=0, name="ScheduleForCPU")
class ScheduleForCPU:
    """Apply the first matching rule to each PrimFunc that is not scheduled yet."""

    def __init__(self, target: Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
                updates[gv] = _schedule_func(func, self.target)
        for gv, func in updates.items():
            mod[gv] = func
        return mod


def _legalize_gelu(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """Exact-erf GELU with TOPI's float32-accurate, vectorizable fast_erf instead of libm's erff."""
    from tvm import topi

    def gelu(x):
        return x * (0.5 + 0.5 * topi.fast_erf(x * (1.0 / math.sqrt(2.0))))

    if call.attrs is not None and getattr(call.attrs, "approximate", "none") == "tanh":
        return call  # the tanh form has no erf; the default legalization handles it
    return bb.call_te(gelu, call.args[0], primfunc_name_hint="gelu")


def fuse_for_cpu(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Legalize and fuse `mod` for an llvm target: the unscheduled TIR functions rules and tuning see.

    FastMathTransform and the GELU legalization use TOPI's polynomial exp / erf (float32-accurate
    and vectorizable; libm's erff is a scalar call per element and made GELU a third of the runtime).
    """
    from tvm.relax.backend.cpu_generic.pipeline import library_dispatch_passes

    with target:
        seq = tvm.transform.Sequential(
            [relax.transform.FastMathTransform()]
            + library_dispatch_passes(target)
            + [
                relax.transform.LegalizeOps({"relax.nn.gelu": _legalize_gelu}),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
            ]
        )
        return seq(mod)


def lower_for_cpu(mod: tvm.IRModule, target: Target, database: Database | None = None) -> tvm.IRModule:
    """Fuse and schedule `mod` for an llvm target; returns a module for relax.build.

    `database` (a MetaSchedule database, see compile.tuning) schedules the functions whose best
    record for this target is a tuned one; the hand rules schedule everything else.
    """
    mod = fuse_for_cpu(mod, target)
    if database is not None:
        from compile.tuning.apply import ApplyTuningDatabase

        mod = ApplyTuningDatabase(database, target)(mod)
    with target:
        return ScheduleForCPU(target)(mod)
