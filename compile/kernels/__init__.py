"""Integer matmul kernels as Relax calls: exact int32 sums of int8 / uint8 operands.

The integer graph (compile.quant) calls only these two functions for its matmuls, so how a target
computes them (layouts, pre-packed weights, dot-product instructions) stays behind this interface.
Semantics are target-independent: the result is the exact int32 sum of products.

CPU targets get one TE function per matmul (compile.kernels.packed_gemm: operands packed for the
target's dot instruction, constant weights packed here in numpy) that compile.schedule.int8_gemm
tiles and tensorizes with the target's instruction (compile.kernels.dot_kernel: AVX-512 VNNI
vpdpbusd, AVX2 vpmaddwd, ARM dotprod sdot, ARMv8.0 NEON smull + sadalp, else a widening fallback);
CUDA targets get plain Relax matmuls, int8 x int8 on tensor cores where they pay, else uint8 x int8 for
dlight's SIMT schedule (compile.kernels.cuda_matmul).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax, te
from tvm.runtime import DataType
from tvm.target import Target

from compile.kernels import cuda_matmul, packed_gemm
from compile.kernels.dot_kernel import dot_kernel_for
from compile.kernels.int4_unpack import Int4Operand, pack_int4_operand, unpack_rhs
from compile.kernels.packed_gemm import GemmPlan

INT8_TYPES = ("int8", "uint8")


def vector_lanes(target: Target, dtype: str) -> int:
    """SIMD lanes of `dtype` on the target (16 fp32 on AVX-512, 4 on NEON): what hand-written kernels and schedule
    rules size their vector loops by."""
    from tvm.target.codegen import llvm_get_vector_width

    bits = llvm_get_vector_width(target) if target.kind.name == "llvm" else 128
    return max(1, bits // DataType(dtype).bits)


def _static_shape(x: relax.Expr, what: str) -> list[int]:
    shape = x.ty.shape
    if shape is None or not all(isinstance(v, int) or hasattr(v, "value") for v in shape.values):
        raise ValueError(f"{what}: integer matmuls need static shapes, got {x.ty}")
    return [int(v) for v in shape.values]


def _check_dtype(x: relax.Expr, allowed: tuple[str, ...], what: str) -> None:
    if x.ty.dtype not in allowed:
        raise ValueError(f"{what}: dtype {x.ty.dtype} is not one of {allowed}")


def emit_int8_dense(bb: relax.BlockBuilder, x: relax.Expr, weight: np.ndarray | Int4Operand, target: Target, *,
                    x_columns: tuple[int, int] | None = None, x_view: MergedHeads | None = None) -> relax.Expr:
    """x [..., M, K] int8 or uint8 @ weight [K, N] int8 (a constant) -> int32 [..., M, N].

    weight as an Int4Operand: its widened int8 weight, stored as nibbles and multipliers and widened in the
    GEMM's function on CPUs (compile.kernels.int4_unpack; CUDA targets get the int8 constant).
    x_columns=(start, stop): multiply x[..., start:stop] instead (K = stop - start), read in place
    by the kernel rather than copied out by a slice first (a layer split into K segments).
    x_view: x is read through this view (folded into the packing on CPUs, no copy).
    """
    _check_dtype(x, INT8_TYPES, "emit_int8_dense x")
    int4, weight = (weight, weight.widened()) if isinstance(weight, Int4Operand) else (None, weight)
    if weight.size and (weight.min() < -128 or weight.max() > 127):
        raise ValueError(f"emit_int8_dense: weight values outside int8 [{weight.min()}, {weight.max()}]")
    weight = np.ascontiguousarray(weight, dtype=np.int8)
    if x_view is not None and target.kind.name == "cuda":
        x, x_view = x_view.relax(bb, x), None
    x_shape = _static_shape(x, "emit_int8_dense x")
    *_, m, x_k = x_view.shape(x_shape) if x_view else x_shape
    start, stop = x_columns if x_columns is not None else (0, x_k)
    if not 0 <= start < stop <= x_k:
        raise ValueError(f"emit_int8_dense: x_columns {x_columns} outside x [..., {m}, {x_k}]")
    k = stop - start
    if weight.ndim != 2 or weight.shape[0] != k:
        raise ValueError(f"emit_int8_dense: weight {weight.shape} does not match x [..., {m}, {k}]")
    if target.kind.name == "cuda":
        if (start, stop) != (0, x_k):
            x = bb.emit(relax.op.strided_slice(x, [len(x.ty.shape) - 1], [start], [stop]))
        return cuda_matmul.dense(bb, x, weight, target)
    plan = GemmPlan.make(dot_kernel_for(target), m, weight.shape[1], k, x.ty.dtype, int(weight.min(initial=0)))
    correction = packed_gemm.weight_correction(weight, plan)
    corrections = [] if correction is None else [relax.const(correction)]
    view = _viewed(x_view)
    if int4 is not None:
        nibbles, multipliers = pack_int4_operand(int4, plan)
        return bb.emit_te(lambda x, n, m, *c: packed_gemm.dense(view(x), unpack_rhs(n, m, plan, int4), c[0] if c else None,
                                                                plan, start),
                          x, relax.const(nibbles), relax.const(multipliers), *corrections, primfunc_name_hint="int8_dense_int4")
    return bb.emit_te(lambda x, w, *c: packed_gemm.dense(view(x), w, c[0] if c else None, plan, start),
                      x, relax.const(packed_gemm.pack_weight(weight, plan)), *corrections, primfunc_name_hint="int8_dense")


@dataclass(frozen=True)
class MergedHeads:
    """Read the attention output o [heads, N, D] as [N, heads * D] (the proj input), without a copy on CPUs."""

    def shape(self, x_shape: list[int]) -> list[int]:
        heads, tokens, dim = x_shape
        return [tokens, heads * dim]

    def te(self, x: te.Tensor) -> te.Tensor:
        heads, tokens, dim = (int(d) for d in x.shape)
        return te.compute((tokens, heads * dim), lambda n, c: x[c // dim, n, c % dim], name="merged_heads")

    def relax(self, bb: relax.BlockBuilder, x: relax.Expr) -> relax.Expr:
        tokens, width = self.shape(_static_shape(x, "MergedHeads"))
        return bb.emit(relax.op.reshape(relax.op.permute_dims(x, [1, 0, 2]), (tokens, width)))


@dataclass(frozen=True)
class HeadView:
    """Read an operand of a batch matmul as one part of a fused projection: x [N, parts * heads * D]
    viewed as [heads, N, D] (part 0, 1, 2 of qkv are q, k, v). The view is folded into the matmul's
    packing on CPUs, so the heads are never copied out of the projection's output."""

    part: int
    parts: int
    heads: int

    def shape(self, x_shape: list[int]) -> list[int]:
        tokens, width = x_shape
        return [self.heads, tokens, width // self.parts // self.heads]

    def te(self, x: te.Tensor) -> te.Tensor:
        heads, tokens, dim = self.shape([int(d) for d in x.shape])
        offset = self.part * heads * dim
        return te.compute((heads, tokens, dim), lambda h, n, d: x[n, offset + h * dim + d], name="head_view")

    def relax(self, bb: relax.BlockBuilder, x: relax.Expr) -> relax.Expr:
        heads, tokens, dim = self.shape(_static_shape(x, "HeadView"))
        parts = bb.emit(relax.op.reshape(x, (tokens, self.parts, heads, dim)))
        part = bb.emit(relax.op.strided_slice(parts, [1], [self.part], [self.part + 1]))
        return bb.emit(relax.op.permute_dims(relax.op.squeeze(part, [1]), [1, 0, 2]))


def smallest_value(bb: relax.BlockBuilder, x: relax.Expr) -> int:
    """The smallest value int8 tensor x can hold: the lower bound of the clip it is cast from (symmetric
    requantization clips to -127), followed through the BlockBuilder's bindings; else -128."""
    node = x
    for _ in range(8):
        if isinstance(node, relax.Var):
            node = bb.lookup_binding(node)
        elif isinstance(node, relax.Call) and node.op.name == "relax.astype":
            node = node.args[0]
        elif isinstance(node, relax.Call) and node.op.name == "relax.clip":
            low = getattr(node.args[1], "value", None)
            low = getattr(low, "value", low)
            return max(-128, int(low)) if isinstance(low, int) else -128
        else:
            break
    return -128


def _viewed(view: HeadView | MergedHeads | None):
    return (lambda t: t) if view is None else view.te


def emit_int8_batch_matmul(bb: relax.BlockBuilder, a: relax.Expr, b: relax.Expr, target: Target,
                           transpose_b: bool = False, a_view: HeadView | None = None,
                           b_view: HeadView | None = None) -> relax.Expr:
    """a [B, M, K] int8/uint8 @ b [B, K, N] int8 (or b [B, N, K] with transpose_b) -> int32 [B, M, N].

    a_view / b_view: the operand is read through a HeadView of the tensor passed.
    On CPUs an N that is not a whole number of register tiles is written as [B, M, N padded] (zeros past N) and
    returned through a slice: kernels that can read rows of a padded stride take the unsliced tensor (unsliced()),
    and their GEMM writes whole vectors (a partial tile wrote lane by lane).
    """
    _check_dtype(a, INT8_TYPES, "emit_int8_batch_matmul a")
    _check_dtype(b, ("int8",), "emit_int8_batch_matmul b")
    a_shape = _static_shape(a, "emit_int8_batch_matmul a")
    b_shape = _static_shape(b, "emit_int8_batch_matmul b")
    *lead, m, k = a_view.shape(a_shape) if a_view else a_shape
    *b_lead, b_k, n = b_view.shape(b_shape) if b_view else b_shape
    if transpose_b:
        b_k, n = n, b_k
    if b_lead != lead or b_k != k:
        raise ValueError(f"emit_int8_batch_matmul: shapes {a.ty.shape} and {b.ty.shape} "
                         f"(transpose_b={transpose_b}, views {a_view}, {b_view}) do not multiply")
    if target.kind.name == "cuda":
        a = a_view.relax(bb, a) if a_view else a
        b = b_view.relax(bb, b) if b_view else b
        return cuda_matmul.batch_matmul(bb, a, b, transpose_b, target)
    plan = GemmPlan.make(dot_kernel_for(target), m, n, k, a.ty.dtype, smallest_value(bb, b))
    view_a, view_b = _viewed(a_view), _viewed(b_view)
    args = [a, b]
    if plan.shift:
        args.append(bb.emit_te(lambda b: packed_gemm.rhs_correction(view_b(b), plan, transpose_b, plan.n_pad), b,
                               primfunc_name_hint="int8_correction"))
    out = bb.emit_te(
        lambda a, b, *c: packed_gemm.batch_matmul(view_a(a), view_b(b), c[0] if c else None, plan, transpose_b,
                                                  plan.n_pad),
        *args, primfunc_name_hint="int8_batch_matmul")
    if plan.n_pad == n:
        return out
    return bb.emit(relax.op.strided_slice(out, [len(lead) + 1], [0], [n]))


def _int(value) -> int:
    """A Relax tuple element of a slice (PrimValue or IntImm) as an int."""
    return int(getattr(value, "value", value))


def unsliced(bb: relax.BlockBuilder, x: relax.Expr) -> tuple[relax.Expr, int]:
    """(tensor, columns): x itself and its last extent, or, when x is the first columns of a wider tensor (a
    padded batch matmul), that tensor and how many of its columns x holds."""
    columns = _static_shape(x, "unsliced")[-1]
    binding = bb.lookup_binding(x) if isinstance(x, relax.Var) else None
    if isinstance(binding, relax.Call) and binding.op.name == "relax.strided_slice" and len(binding.args) == 4:
        source, axes, begin = binding.args[0], binding.args[1], binding.args[2]
        last = len(_static_shape(source, "unsliced")) - 1
        if [_int(v) for v in axes] == [last] and _int(begin[0]) == 0:
            return source, columns
    return x, columns
