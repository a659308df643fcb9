"""Integer primitives the Relax operator set lacks, as hand-written TIR: exact integer square root.

`emit_isqrt` is a bit-by-bit floor square root (no floats): one serial loop of 31 steps per value.
Written as its own PrimFunc, marked scheduled and opaque to fusion, because the same steps as
elementwise Relax ops would be inlined into one exponentially large expression.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.script import tirx as T

OPAQUE = 8  # relax op pattern kOpaque: FuseOps leaves the call alone


def _isqrt_func(rows: int, dtype: str, gpu: bool) -> tvm.tirx.PrimFunc:
    """floor(sqrt(a)) for a [rows, 1] of int32 / int64 (values < 2^62), computed in int64."""
    top_bit = 30  # sqrt of anything below 2^62 is below 2^31

    @T.prim_func(private=True, s_tir=True)
    def isqrt(a: T.Buffer((rows, 1), dtype), out: T.Buffer((rows, 1), dtype)):
        T.func_attr({"tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            root = T.sblock_alloc_buffer((rows,), "int64", scope="local")
            for i in T.thread_binding(rows, thread="threadIdx.x") if gpu else T.serial(rows):
                root[i] = T.int64(0)
                for b in T.serial(top_bit + 1):
                    candidate = root[i] | (T.int64(1) << T.int64(top_bit - b))
                    if candidate * candidate <= T.Cast("int64", a[i, 0]):
                        root[i] = candidate
                out[i, 0] = T.Cast(dtype, root[i])

    return isqrt


def emit_isqrt(em, x: relax.Expr) -> relax.Expr:
    """Exact integer square root of a non-negative [rows, 1] int32 / int64 tensor."""
    rows, one = em.shape(x)
    if one != 1:
        raise ValueError(f"emit_isqrt takes a column [rows, 1], got [{rows}, {one}]")
    dtype = x.ty.dtype
    gpu = em.target.kind.name == "cuda"
    func = em.bb.add_func(_isqrt_func(rows, dtype, gpu), f"isqrt_{dtype}_{rows}")
    return em.emit(relax.call_tir(func, [x], relax.TensorType((rows, 1), dtype)))
