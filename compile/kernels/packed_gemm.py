"""The packed int8 GEMM as TE stages, for CPUs: pack, dot-product GEMM over whole tiles, unpad.

    lhs  [..., M, K]  int8/uint8 -> pack_lhs:  [..., Mp, Kp] in the kernel's activation dtype
                                     (shifted by 128 when the instruction wants the other sign),
                                     zero padded to whole register tiles (Mp) and dot depths (Kp)
    rhs  [..., K, N]  int8       -> packed:    [..., Np/NR, Kp/D, NR, D], NR = tile columns, D = depth,
                                     so one dot instruction reads NR/vectors x D contiguous bytes;
                                     constant weights are packed in numpy (pack_weight), runtime
                                     operands by pack_rhs (an interleaving kernel's b [K, N] from a
                                     zero padded copy, pad_rhs)
    gemm [..., Mp, Np] int32 = sum_k lhs' * rhs
    out  [..., M, N]  int32 = gemm - shift * sum_k rhs   (exact: the shift is undone)

Every stage is tagged (block annotation ROLE) so compile.schedule.int8_gemm finds them after Relax
has fused the caller's elementwise epilogue (bias, scale, requantize) behind `out`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from compile.kernels.arm_tiles import c16_position
from compile.kernels.dot_kernel import DotKernel, choose_tile

ROLE = "edgevit.int8"  # block annotation: pack_lhs | pack_rhs_kn | pack_rhs_nk (b [.., N, K]) | pack_rhs_pad
                       # | pack_rhs_int4 and pack_rhs_int4_multipliers (compile.kernels.int4_unpack) | gemm
                       # | partial_sum | out | correction (rhs_correction, a function of its own)
KERNEL = "edgevit.int8.kernel"  # gemm block: the DotKernel's name
TILE = "edgevit.int8.tile"  # gemm block: [rows, column vectors] of the register tile


@dataclass(frozen=True)
class GemmPlan:
    """Shapes, register tile and activation shift of one int8 GEMM [M, K] @ [K, N] on `kernel`."""

    kernel: DotKernel
    m: int
    n: int
    k: int
    rows: int
    vectors: int
    shift: int  # added to the activation to reach kernel.lhs_dtype: +128 (int8 -> uint8), -128 (uint8 -> int8), or 0

    @staticmethod
    def make(kernel: DotKernel, m: int, n: int, k: int, lhs_dtype: str, rhs_min: int = -128) -> GemmPlan:
        """rhs_min: the smallest value B may hold (-127: symmetric int8, which some kernels need to be exact)."""
        while kernel.fallback is not None and (m < kernel.min_rows or (kernel.symmetric_rhs and rhs_min < -127)):
            kernel = kernel.fallback
        rows, vectors = choose_tile(kernel, m, n)
        shift = {("int8", "uint8"): 128, ("uint8", "int8"): -128}.get((str(lhs_dtype), kernel.lhs_dtype), 0)
        return GemmPlan(kernel, m, n, k, rows, vectors, shift)

    @property
    def columns(self) -> int:
        return self.vectors * self.kernel.lanes

    @property
    def m_pad(self) -> int:
        return _round_up(self.m, self.rows)

    @property
    def n_pad(self) -> int:
        return _round_up(self.n, self.columns)

    @property
    def k_pad(self) -> int:
        return _round_up(self.k, self.kernel.k_block or self.kernel.depth)

    @property
    def packed_rhs_shape(self) -> tuple[int, int, int, int]:
        return (self.n_pad // self.columns, self.k_pad // self.kernel.depth, self.columns, self.kernel.depth)


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def pack_weight(weight: np.ndarray, plan: GemmPlan) -> np.ndarray:
    """weight [K, N] int8 -> [Np/NR, Kp/D, NR, D] int8, zero padded (the layout pack_rhs builds at run time)."""
    padded = np.zeros((plan.k_pad, plan.n_pad), dtype=np.int8)
    padded[: plan.k, : plan.n] = weight
    columns, depth = plan.columns, plan.kernel.depth
    tiles = padded.reshape(plan.k_pad // depth, depth, plan.n_pad // columns, columns)
    return np.ascontiguousarray(tiles.transpose(2, 0, 3, 1))


def weight_correction(weight: np.ndarray, plan: GemmPlan) -> np.ndarray | None:
    """-shift * column sums of the weight [N] int32 (what undoes the activation shift); None without shift."""
    if plan.shift == 0:
        return None
    return (-plan.shift * weight.astype(np.int64).sum(axis=0)).astype(np.int32)


def _zero_padded(value, dtype: str, axes):
    """value where every (index, size, padded size) axis is inside its size, else 0; only the padded
    axes are tested (a schedule vectorizes an axis whose test is not there)."""
    inside = [index < size for index, size, padded in axes if padded != size]
    return tirx.if_then_else(tirx.all(*inside), value, tirx.const(0, dtype)) if inside else value


def pack_lhs(a: te.Tensor, plan: GemmPlan, k_offset: int = 0) -> te.Tensor:
    """a [..., M, k_offset : k_offset + K] -> [..., Mp, Kp] in the kernel's activation dtype, zero padded."""
    dtype = plan.kernel.lhs_dtype or a.dtype

    def value(*index):
        *lead, m, k = index
        element = a[(*lead, m, k + k_offset)]
        shifted = (element.astype("int32") + plan.shift).astype(dtype) if plan.shift else element.astype(dtype)
        return _zero_padded(shifted, dtype, ((m, plan.m, plan.m_pad), (k, plan.k, plan.k_pad)))

    shape = (*a.shape[:-2], plan.m_pad, plan.k_pad)
    return te.compute(shape, value, name="int8_pack_lhs", attrs={ROLE: "pack_lhs"})


def _rhs(b: te.Tensor, lead, k, n, transposed: bool):
    return b[(*lead, n, k)] if transposed else b[(*lead, k, n)]


def pad_rhs(b: te.Tensor, plan: GemmPlan) -> te.Tensor:
    """Runtime operand b [..., K, N] -> [..., Kp, Np], zero padded: the padding is a box the schedule fills apart
    from the copy, so the packing that reads it needs no test per byte."""

    def value(*index):
        *lead, k, n = index
        return _zero_padded(b[(*lead, k, n)], "int8", ((k, plan.k, plan.k_pad), (n, plan.n, plan.n_pad)))

    return te.compute((*b.shape[:-2], plan.k_pad, plan.n_pad), value, name="int8_pad_rhs", attrs={ROLE: "pack_rhs_pad"})


def pack_rhs(b: te.Tensor, plan: GemmPlan, transposed: bool) -> te.Tensor:
    """Runtime operand b [..., K, N] (or [..., N, K] when transposed) -> [..., Np/NR, Kp/D, NR, D], zero padded
    (for an interleaving kernel, b [..., K, N] through pad_rhs first)."""
    columns, depth = plan.columns, plan.kernel.depth
    padded = plan.kernel.interleave_rhs and not transposed
    if padded and (plan.k, plan.n) != (plan.k_pad, plan.n_pad):
        b = pad_rhs(b, plan)

    def value(*index):
        *lead, tile, group, column, element = index
        n, k = tile * columns + column, group * depth + element
        element = _rhs(b, lead, k, n, transposed)
        return element if padded else _zero_padded(element, "int8", ((n, plan.n, plan.n_pad), (k, plan.k, plan.k_pad)))

    shape = (*b.shape[:-2], *plan.packed_rhs_shape)
    return te.compute(shape, value, name="int8_pack_rhs", attrs={ROLE: "pack_rhs_nk" if transposed else "pack_rhs_kn"})


def rhs_correction(b: te.Tensor, plan: GemmPlan, transposed: bool, columns: int | None = None) -> te.Tensor:
    """-shift * sum_k b[..., k, n] as int32 [..., columns] (default N; 0 in the columns past N): weight_correction
    for a runtime operand."""
    k = te.reduce_axis((0, plan.k), name="k")

    def value(*index):
        *lead, n = index
        if columns in (None, plan.n):
            return te.sum(_rhs(b, lead, k, n, transposed).astype("int32") * -plan.shift, axis=k)
        element = _rhs(b, lead, k, tirx.min(n, plan.n - 1), transposed).astype("int32") * -plan.shift
        return te.sum(tirx.if_then_else(n < plan.n, element, 0), axis=k)

    return te.compute((*b.shape[:-2], columns or plan.n), value, name="int8_correction", attrs={ROLE: "correction"})


def gemm(lhs: te.Tensor, rhs: te.Tensor, plan: GemmPlan) -> te.Tensor:
    """[..., Mp, Np] int32 = lhs [..., Mp, Kp] @ packed rhs ([Np/NR, ...] shared, or [..., Np/NR, ...] per batch).

    A kernel with partial lanes (arm_tiles' c16) accumulates [..., Mp, Np, lanes] partial sums, each over its
    bytes of every depth block (c16_position), and adds them in a stage of their own (`partial_sum`).
    """
    columns, depth, partial = plan.columns, plan.kernel.depth, plan.kernel.partial_lanes
    shared = len(rhs.shape) == 4

    def b_at(lead, n, group, element):
        packed = (n // columns, group, n % columns, element)
        return rhs[packed] if shared else rhs[(*lead, *packed)]

    attrs = {ROLE: "gemm", KERNEL: plan.kernel.name, TILE: [plan.rows, plan.vectors]}
    shape = (*lhs.shape[:-2], plan.m_pad, plan.n_pad)
    if partial == 1:
        k = te.reduce_axis((0, plan.k_pad), name="k")

        def value(*index):
            *lead, m, n = index
            return te.sum(lhs[(*lead, m, k)].astype("int32") * b_at(lead, n, k // depth, k % depth).astype("int32"),
                          axis=k)

        return te.compute(shape, value, name="int8_gemm", attrs=attrs)
    group = te.reduce_axis((0, plan.k_pad // depth), name="group")
    step = te.reduce_axis((0, depth // partial), name="step")

    def partial_value(*index):
        *lead, m, n, lane = index
        position = c16_position(lane, step)
        a = lhs[(*lead, m, group * depth + position)]
        return te.sum(a.astype("int32") * b_at(lead, n, group, position).astype("int32"), axis=[group, step])

    partials = te.compute((*shape, partial), partial_value, name="int8_gemm", attrs=attrs)
    lane = te.reduce_axis((0, partial), name="lane")
    return te.compute(shape, lambda *index: te.sum(partials[(*index, lane)], axis=lane), name="int8_partial_sum",
                      attrs={ROLE: "partial_sum"})


def unpad(product: te.Tensor, plan: GemmPlan, correction: te.Tensor | None, columns: int | None = None) -> te.Tensor:
    """[..., M, columns] int32 (default N): the padded product cut to size plus the correction ([columns] or
    [..., columns]) if any. Columns past N are whole tiles' zeros: a tile then writes back without a test per lane.

    The correction is an input of the function, never a stage in it: the tile write-back can move
    into the GEMM's tile loop only when every stage it reads from is there too.
    """

    def value(*index):
        *lead, m, n = index
        if correction is None:
            return product[index]
        return (correction[n] if len(correction.shape) == 1 else correction[(*lead, n)]) + product[index]

    shape = (*product.shape[:-2], plan.m, columns or plan.n)
    return te.compute(shape, value, name="int8_out", attrs={ROLE: "out"})


def dense(x: te.Tensor, packed_weight: te.Tensor, correction: te.Tensor | None, plan: GemmPlan,
          k_offset: int = 0) -> te.Tensor:
    """x [..., M, k_offset : k_offset + K] @ pre-packed constant weight -> int32 [..., M, N]."""
    return unpad(gemm(pack_lhs(x, plan, k_offset), packed_weight, plan), plan, correction)


def batch_matmul(a: te.Tensor, b: te.Tensor, correction: te.Tensor | None, plan: GemmPlan,
                 transposed: bool, columns: int | None = None) -> te.Tensor:
    """a [..., M, K] @ b [..., K, N] (or b [..., N, K] transposed), both at run time -> int32 [..., M, columns]
    (default N; see unpad).

    `correction` [..., columns] is rhs_correction(b), computed by a separate function (see unpad).
    """
    return unpad(gemm(pack_lhs(a, plan), pack_rhs(b, plan, transposed), plan), plan, correction, columns)
