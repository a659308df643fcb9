"""Recognising what a TIR function computes, so a schedule rule can decide whether it applies."""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir.schedule import ScheduleError

from compile.kernels import vector_lanes  # noqa: F401 - the schedule rules' import of it


@dataclass(frozen=True)
class MatmulBlock:
    """The reduction block of C[..., i, j] += A[..., i, k] * B[..., k, j] (or B[..., j, k])."""

    block: s_tir.schedule.SBlockRV
    m: int
    n: int
    k: int
    dtype: str


def store_dtype(block) -> str:
    """The dtype a block writes (float32 when its body is not a plain store)."""
    body = block.body
    return str(body.buffer.dtype) if isinstance(body, tirx.BufferStore) else "float32"


def _const(extent) -> int | None:
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def find_matmul(sch: s_tir.Schedule) -> MatmulBlock | None:
    """The single matmul-shaped reduction block of the function, if it has exactly one.

    Shape test: iterators S..S S S R (one reduction, innermost), the last loop nest is the
    block's own, and the body is an accumulation of a product of two buffer loads.
    """
    if not has_root(sch):
        return None
    candidates = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(block)
        kinds = [iv.iter_type for iv in stmt.iter_vars]
        if not kinds or kinds.count(tirx.IterVar.CommReduce) != 1 or kinds[-1] != tirx.IterVar.CommReduce:
            continue
        if len(kinds) < 3 or len(stmt.reads) != 2:  # A and B (the accumulator is implied by init)
            continue
        extents = [_const(iv.dom.extent) for iv in stmt.iter_vars]
        if None in extents:
            continue
        body = stmt.body
        if not isinstance(body, tirx.BufferStore) or not isinstance(body.value, tirx.Add):
            continue
        if not _is_product_of_two_buffers(body.value.b, body.buffer):
            continue
        candidates.append(MatmulBlock(block, extents[-3], extents[-2], extents[-1], str(body.buffer.dtype)))
    return candidates[0] if len(candidates) == 1 else None


def _load_buffer(expr):
    """The buffer read by `expr`, looking through a cast (int8 -> int32 operands)."""
    if isinstance(expr, tirx.Cast):
        expr = expr.value
    return expr.source if isinstance(expr, TensorLoad) else None


def _is_product_of_two_buffers(expr, output) -> bool:
    """expr is A[...] * B[...] (maybe cast) with A, B distinct and not the output: a matmul term."""
    if isinstance(expr, tirx.Cast):
        expr = expr.value
    if not isinstance(expr, tirx.Mul):
        return False
    a, b = _load_buffer(expr.a), _load_buffer(expr.b)
    return a is not None and b is not None and not a.same_as(b) and not output.same_as(a) and not output.same_as(b)


def has_root(sch: s_tir.Schedule) -> bool:
    """Whether the function is block-structured TensorIR (extern / pre-scheduled kernels are not)."""
    try:
        sch.get_sblock("root")
        return True
    except ScheduleError:
        return False
