"""CUDA lowering as its list of phases: TVM's CUDA pipeline, with int8 GEMMs on tensor cores and one CUDA graph.

TVM 0.27's default CUDA pipeline (relax.backend.cuda.pipeline) legalizes, fuses and schedules with dlight.
Two changes here:
- int8 x int8 -> int32 matmuls (compile.kernels.cuda_matmul emits them where tensor cores pay) get dlight's
  wmma schedule (MatmulInt8Tensorization, 16x16x16 s8 fragments: IMMA.16816.S8.S8 on sm_80+) without its
  software-pipeline annotations: with them InjectSoftwarePipeline fails in TVM 0.27 ("GetWmmaFragmentSize"
  check). The fused requantize / bias epilogue is inlined into the write-back, as dlight does. A matmul the
  rule cannot tensorize is marked `dlight.do_not_tensorize` and gets dlight's SIMT schedule.
- `relax.backend.use_cuda_graph`: RewriteCUDAGraph (in the pipeline, off by default) lifts the static
  kernel sequence of an inference into one graph, captured on the first run and replayed after.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import s_tir, tirx
from tvm.target import Target

from compile.schedule.prim_funcs import rewrite_unscheduled

PIPELINE_ANNOTATIONS = ("software_pipeline_order", "software_pipeline_stage")


def _int8_matmul_block(func: tirx.PrimFunc) -> bool:
    """Whether `func`'s reduction is an int8 x int8 -> int32 matmul (what the wmma s8 intrinsics compute)."""
    from tvm.s_tir.dlight.analysis import get_root_block
    from tvm.s_tir.dlight.gpu.matmul import get_in_out_dtypes, get_reduction_blocks

    sch = s_tir.Schedule(func)
    blocks = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
    return bool(blocks) and len(blocks) == 1 and get_in_out_dtypes(sch.get(blocks[0])) == ("int8", "int32")


def _without_pipelining(sch: s_tir.Schedule) -> s_tir.Schedule:
    """Drop the software-pipeline annotations from every loop of `sch` (the lowering TVM 0.27 fails on)."""
    for block in _block_names(sch.mod["main"].body):
        for loop in sch.get_loops(sch.get_sblock(block)):
            for key in PIPELINE_ANNOTATIONS:
                if key in sch.get(loop).annotations:
                    sch.unannotate(loop, key)
    return sch


def child_statements(stmt) -> list:
    """The statements directly under a TIR statement (loop and block bodies, both branches of an if)."""
    if isinstance(stmt, tirx.SeqStmt):
        return list(stmt.seq)
    children = (getattr(stmt, name, None) for name in ("body", "block", "then_case", "else_case"))
    return [child for child in children if isinstance(child, tirx.Stmt)]


def _block_names(stmt) -> list[str]:
    """Names of the blocks under a TIR statement, outermost first."""
    block = getattr(stmt, "block", None)
    own = [block.name_hint] if block is not None and block.name_hint != "root" else []
    return own + [name for child in child_statements(stmt) for name in _block_names(child)]


def tensor_core_schedule(func: tirx.PrimFunc, target: Target) -> tirx.PrimFunc | None:
    """`func` (an int8 x int8 -> int32 matmul + its fused epilogue) scheduled on wmma tensor cores, or None."""
    from tvm.s_tir.dlight.gpu.matmul import MatmulInt8Tensorization

    try:
        sch = MatmulInt8Tensorization().apply(func, target, False)
    except (tvm.TVMError, AssertionError, ValueError):
        return None
    if sch is None:
        return None
    return _without_pipelining(sch).mod["main"].with_attr("tirx.is_scheduled", True)


@tvm.transform.module_pass(opt_level=0, name="ScheduleInt8TensorCores")
class ScheduleInt8TensorCores:
    """Schedule each int8 x int8 -> int32 matmul on tensor cores; keep dlight's tensor-core rule off the rest."""

    def __init__(self, target: Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_unscheduled(mod, self._on_tensor_cores)

    def _on_tensor_cores(self, func: tirx.PrimFunc) -> tirx.PrimFunc | None:
        if not _int8_matmul_block(func):
            return None
        return tensor_core_schedule(func, self.target) or func.with_attr("dlight.do_not_tensorize", True)


def lower_for_cuda(mod: tvm.IRModule, target: Target,
                   dump: Callable[[str, tvm.IRModule], None] | None = None) -> tvm.IRModule:
    """TVM's default CUDA pipeline with int8 GEMMs on tensor cores and CUDA-graph capture; returns a module
    for relax.build(..., relax_pipeline=None). `dump("lowered", mod)` sees the result (--dump-ir)."""
    from tvm.relax.backend.cuda import pipeline

    legalize = pipeline.legalize_passes(target)
    if legalize[-1].info.name != "ApplyDefaultSchedule":
        raise RuntimeError(f"TVM's CUDA legalize passes end with {legalize[-1].info.name}, not dlight's schedule")
    passes = (pipeline.library_dispatch_passes(target) + legalize[:-1] + [ScheduleInt8TensorCores(target)]
              + legalize[-1:] + pipeline.dataflow_lower_passes(target) + pipeline.finalize_passes(target))
    with target, tvm.transform.PassContext(config={"relax.backend.use_cuda_graph": True}):
        mod = tvm.transform.Sequential(passes)(mod)
    if dump is not None:
        dump("lowered", mod)
    return mod
