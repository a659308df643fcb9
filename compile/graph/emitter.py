"""Emitter: a Relax BlockBuilder for one target with the few helpers every part of the graph uses."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax
from tvm.target import Target

from compile.kernels import HeadView, MergedHeads, emit_int8_batch_matmul, emit_int8_dense
from compile.kernels.int4_unpack import Int4Operand
from compile.quant.int4 import Int4Weight, group_of_rows


class Emitter:
    """Emits into `bb` for `target`; activations are batch-1 tensors [tokens, channels]."""

    def __init__(self, bb: relax.BlockBuilder, target: Target):
        self.bb = bb
        self.target = target

    @property
    def cpu(self) -> bool:
        """Whether the target is a CPU (llvm): the hand-written row kernels run there."""
        return self.target.kind.name == "llvm"

    def emit(self, expr: relax.Expr) -> relax.Expr:
        return self.bb.emit(expr)

    def const(self, value, dtype: str | None = None) -> relax.Expr:
        array = np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
        return relax.const(array, str(array.dtype)) if array.ndim else relax.const(array.item(), str(array.dtype))

    def rows(self, x: relax.Expr, start: int, stop: int, axis: int = 0, step: int = 1) -> relax.Expr:
        return self.emit(relax.op.strided_slice(x, [axis], [start], [stop], [step]))

    def shape(self, x: relax.Expr) -> tuple[int, ...]:
        return tuple(int(d) for d in x.ty.shape)

    def int8_accumulate(self, x: relax.Expr, linear, x_view: MergedHeads | None = None,
                        int4: Int4Weight | None = None) -> relax.Expr:
        """acc [N, out] int32 = sum over segments of (x[:, seg] @ weight[seg]) << shift (x read through x_view)
        for a QLinear (compile.quant.scales); with `int4`, the weight is its widened int8 weight, stored as int4."""
        acc = None
        for start, stop, shift in linear.segments:
            weight = linear.weight[start:stop] if int4 is None else int4_operand(int4, start, stop)
            part = emit_int8_dense(self.bb, x, weight, self.target, x_columns=(start, stop), x_view=x_view)
            if shift:
                part = self.emit(relax.op.left_shift(part, self.const(shift, "int32")))
            acc = part if acc is None else self.emit(relax.op.add(acc, part))
        return acc

    def batch_matmul(self, a: relax.Expr, b: relax.Expr, transpose_b: bool = False, a_view: HeadView | None = None,
                     b_view: HeadView | None = None) -> relax.Expr:
        return emit_int8_batch_matmul(self.bb, a, b, self.target, transpose_b, a_view, b_view)

    def attend_int8(self, qkv: relax.Expr, heads: int, queries: int | None,
                    probabilities: Callable[[relax.Expr], relax.Expr]) -> relax.Expr:
        """int32 p @ v [heads, Q, D] of int8 qkv [N, 3C], p = probabilities(int32 q @ k^T): q, k and v are head
        views of qkv, read by the matmuls themselves (no copies); queries: only the first Q tokens ask."""
        q, k, v = (HeadView(part, 3, heads) for part in range(3))
        asking = qkv if queries is None else self.rows(qkv, 0, queries)
        logits = self.batch_matmul(asking, qkv, transpose_b=True, a_view=q, b_view=k)
        return self.batch_matmul(probabilities(logits), qkv, b_view=v)


def int4_operand(int4: Int4Weight, start: int, stop: int) -> Int4Operand:
    """Rows start:stop of a w4a8 weight as the int8 GEMM's int4 operand (compile.kernels.int4_unpack)."""
    groups = group_of_rows(int4.rows, int4.group)[start:stop]
    return Int4Operand(int4.codes()[start:stop], int4.multiplier[groups[0]:groups[-1] + 1].view(np.uint8),
                       int4.group, start)
