"""4-bit weights for the packed int8 GEMM: nibbles in the kernel's panel order, widened to int8 at run time.

A w4a8 weight is an int8 weight w8 = q * m (compile.quant.int4: codes q in [-7, 7], a multiplier m in
1..18 per scale group and column), so the GEMM, its column sums and its epilogue are the int8 ones;
only where the packed weight [Np/NR, Kp/D, NR, D] comes from differs. The bundle holds

    nibbles     int8 [Np/NR, ceil(Kp/D / 2), NR, D]: depth step 2h in the low nibble, 2h + 1 in the high one,
                so a byte and its widened pair sit at the same (column, element) of two consecutive steps;
    multipliers int8 [Np/NR, G, NR]: m of each scale group and column (one byte per group and column);

and `unpack_rhs`, stages of the GEMM's own function (roles pack_rhs_int4_multipliers and pack_rhs_int4,
compile.schedule.int8_gemm), rebuilds the int8 panels once per call: the multipliers repeated D times
(once per group, not per step: read per step, that gather cost more than the GEMM), then per step a
shift pair sign-extends each nibble and one multiply by m, for whole vectors of NR x D bytes (steps run
in unrolled pairs, so the shifts are constants). Half the weight bytes are read, the int8 panels written
once and read by the GEMM as before; DeiT-tiny's fc1 (197 x 192 x 768) on the host: ~10-15 us more than
the int8 GEMM's ~75 us.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from compile.kernels.packed_gemm import ROLE, GemmPlan, pack_weight


@dataclass(frozen=True)
class Int4Operand:
    """The int4 form of one GEMM weight segment (rows first_row .. first_row + K of its layer)."""

    codes: np.ndarray  # int8 [K, N] in [-7, 7]
    multipliers: np.ndarray  # uint8 [G, N]: the scale groups rows first_row.. touch, first_row's group first
    group: int  # rows per scale group of the layer (0: one group)
    first_row: int = 0

    def step_group(self, row: int) -> int:
        """The multipliers' row of weight row `row` (of this segment)."""
        return (self.first_row + row) // self.group - self.first_row // self.group if self.group else 0

    def widened(self) -> np.ndarray:
        """int8 [K, N]: codes times their multipliers, the weight the GEMM multiplies."""
        rows = [self.step_group(row) for row in range(len(self.codes))]
        return (self.codes.astype(np.int16) * self.multipliers[rows]).astype(np.int8)


def pack_int4_operand(operand: Int4Operand, plan: GemmPlan) -> tuple[np.ndarray, np.ndarray]:
    """(nibbles, multipliers) of the module docstring; every depth step must lie in one scale group."""
    depth = plan.kernel.depth
    steps = [operand.step_group(k) for k in range(0, plan.k, depth)]
    if any(operand.step_group(min(k + depth, plan.k) - 1) != step for k, step in zip(range(0, plan.k, depth), steps)):
        raise ValueError(f"int4 weight: a depth step of {depth} rows straddles two scale groups of {operand.group}")
    codes = pack_weight(operand.codes, plan).view(np.uint8)  # [Np/NR, Kp/D, NR, D], nibble values in the low bits
    if codes.shape[1] % 2:
        codes = np.concatenate([codes, np.zeros_like(codes[:, :1])], axis=1)
    nibbles = (codes[:, 0::2] & 0x0F) | ((codes[:, 1::2] & 0x0F) << 4)
    multipliers = np.zeros((plan.n_pad, len(operand.multipliers)), dtype=np.int8)
    multipliers[: plan.n] = operand.multipliers.T
    tiles = multipliers.reshape(plan.n_pad // plan.columns, plan.columns, -1).transpose(0, 2, 1)
    return np.ascontiguousarray(nibbles.view(np.int8)), np.ascontiguousarray(tiles)


def unpack_rhs(nibbles: te.Tensor, multipliers: te.Tensor, plan: GemmPlan, operand: Int4Operand) -> te.Tensor:
    """int8 [Np/NR, 2 ceil(Kp/D / 2), NR, D] (an odd step count padded by one), the packed weight packed_gemm.gemm
    reads, from pack_int4_operand's arrays. The schedule unrolls steps by pairs (compile.schedule.int8_gemm), so
    each nibble's shifts are constants."""
    depth, groups = plan.kernel.depth, int(multipliers.shape[1])
    tiles, pairs, columns, _ = (int(d) for d in nibbles.shape)
    four = tirx.const(4, "int8")
    repeated = te.compute((tiles, groups, columns, depth), lambda tile, group, column, element:
                          multipliers[tile, group, column], name="int8_unpack_multipliers",
                          attrs={ROLE: "pack_rhs_int4_multipliers"})

    def value(tile, step, column, element):
        byte = nibbles[tile, step // 2, column, element]
        code = tirx.shift_right(tirx.shift_left(byte, four - four * (step % 2).astype("int8")), four)
        if operand.group:
            row = operand.first_row + step * depth
            group = tirx.min(row // operand.group - operand.first_row // operand.group, groups - 1)
        else:
            group = 0
        return code * repeated[tile, group, column, element]

    return te.compute((tiles, 2 * pairs, columns, depth), value, name="int8_unpack_rhs", attrs={ROLE: "pack_rhs_int4"})
