"""Integer primitives the Relax operator set lacks, as hand-written TIR: exact integer square root (and the
clip-and-cast every hand-written kernel ends with).

`isqrt_steps` is a bit-by-bit floor square root (no floats): one serial loop of 31 steps per value,
a TIR macro the row kernels (compile.kernels.row_kernels) inline; `float_isqrt` gives the same root from a
float64 square root, for the int8 graph's ToMe matching; `emit_isqrt` is it as its own
PrimFunc, marked scheduled and opaque to fusion, because the same steps as elementwise Relax ops
would be inlined into one exponentially large expression.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.script import tirx as T

OPAQUE = 8  # relax op pattern kOpaque: FuseOps leaves the call alone


def clip_cast(x, low: int, high: int, dtype: str):
    """dtype(clip(x, low, high)) of a PrimExpr; TIR brings the integer bounds to x's dtype (int64 or float32)."""
    return T.Cast(dtype, T.min(T.max(x, low), high))


TOP_BIT = 30  # sqrt of anything below 2^62 is below 2^31


def _with_bit(root, b):
    """The root so far with bit TOP_BIT - b set: the candidate of step b."""
    return root[0] | (T.int64(1) << T.int64(TOP_BIT - b))


@T.macro
def isqrt_steps(value, root):
    """root[0] = floor(sqrt(value)) for an int64 value < 2^62, one bit at a time from the top."""
    root[0] = T.int64(0)
    for b in T.serial(TOP_BIT + 1):
        if _with_bit(root, b) * _with_bit(root, b) <= value:
            root[0] = _with_bit(root, b)


@T.macro
def float_isqrt(value, root):
    """root[0] = floor(sqrt(value)) for an int64 value < 2^52 through a float64 square root, put right by one step
    either way (the rounded root can be one off): a few instructions instead of isqrt_steps' 31 serial steps, for
    graphs that may use floats (int8; int8-full stays integer only)."""
    root[0] = T.Cast("int64", T.sqrt(T.Cast("float64", value)))
    if root[0] * root[0] > value:
        root[0] = root[0] - T.int64(1)
    if (root[0] + T.int64(1)) * (root[0] + T.int64(1)) <= value:
        root[0] = root[0] + T.int64(1)


def square_root(integer_only: bool):
    """The floor square root macro a kernel inlines: isqrt_steps without floats (int8-full), else float_isqrt."""
    return isqrt_steps if integer_only else float_isqrt


def _isqrt_func(rows: int, dtype: str, gpu: bool, integer_only: bool) -> tvm.tirx.PrimFunc:
    """floor(sqrt(a)) for a [rows, 1] of int32 / int64 (values < 2^62; < 2^52 unless integer_only), in int64."""
    root_steps = square_root(integer_only)

    @T.prim_func(private=True, s_tir=True)
    def isqrt(a: T.Buffer((rows, 1), dtype), out: T.Buffer((rows, 1), dtype)):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            for i in T.thread_binding(rows, thread="threadIdx.x") if gpu else T.serial(rows):
                with T.sblock("row"):
                    root = T.sblock_alloc_buffer((1,), "int64", scope="local" if gpu else "global")
                    root_steps(T.Cast("int64", a[i, 0]), root)
                    out[i, 0] = T.Cast(dtype, root[0])

    return isqrt


def emit_isqrt(em, x: relax.Expr, integer_only: bool = True) -> relax.Expr:
    """Exact integer square root of a non-negative [rows, 1] int32 / int64 tensor (through float64 when not
    integer_only: values below 2^52)."""
    rows, one = em.shape(x)
    if one != 1:
        raise ValueError(f"emit_isqrt takes a column [rows, 1], got [{rows}, {one}]")
    dtype = x.ty.dtype
    gpu = em.target.kind.name == "cuda"
    func = em.bb.add_func(_isqrt_func(rows, dtype, gpu, integer_only), f"isqrt_{dtype}_{rows}")
    return em.emit(relax.call_tir(func, [x], relax.TensorType((rows, 1), dtype)))
