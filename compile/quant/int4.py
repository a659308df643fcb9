"""Symmetric int4 weights, two per byte: the storage of a w4a8 GEMM's weight [K, N].

Codes q in [-7, 7] (symmetric; the nibble's -8 is never produced), real weight = q * scale[g(k), n]:
one scale per output column (`group` 0) or per group of `group` consecutive input rows (K) and
column. A group's scale is an integer multiple of its column's base scale (double quantization, as
QLoRA's): scale[g, n] = column_scale[n] * multiplier[g, n], multiplier in 1..MAX_MULTIPLIER (uint8,
one byte per group and column). So the widened weight q * multiplier is in [-126, 126]
(compile.kernels.int4_unpack.Int4Operand.widened): an ordinary int8 weight with one scale per column,
which the int8 GEMM, its column sums and its epilogue take unchanged (compile.graph.gemm's W4A8Gemm);
GPTQ and round-to-nearest round on that grid. Per-column scales keep every multiplier at MAX_MULTIPLIER (not stored).

Packed layout (uint8 [ceil(K / 8) * 4, N]): K in blocks of 8 rows; byte (4b + j, n) holds row
8b + j in its low nibble and row 8b + 4 + j in its high nibble (j < 4): a byte holds the operands
of two consecutive dot-product depth steps (D = 4 for VNNI, SDOT and AMX). The kernels re-pack
these nibbles into their weight panels at compile time (compile.kernels.int4_unpack) and widen them
there once per inference. `unpack_int4` reads the bytes by arithmetic shifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT4_MAX = 7
MAX_MULTIPLIER = 18  # a group's scale in steps of its column's base scale: 7 * 18 = 126 still fits int8
GROUPS = (0, 32, 64, 128)  # input rows per scale; 0: one scale per output column
PAIR_ROWS = 4  # a byte holds rows k and k + 4: one dot-product depth step apart
CLIP_FRACTIONS = np.linspace(0.5, 1.0, 21)  # clips tried per group and column, in units of its largest |w|


@dataclass(frozen=True)
class Int4Weight:
    """One GEMM's packed int4 weight with its scales (see the module docstring for the layout)."""

    packed: np.ndarray  # uint8 [ceil(K / 8) * 4, N]
    column_scale: np.ndarray  # float32 [N]: the base scale of each column
    multiplier: np.ndarray  # uint8 [G, N] in 1..MAX_MULTIPLIER; all MAX_MULTIPLIER per column (G = 1, not stored)
    group: int  # input rows per scale group; 0: per output column
    rows: int  # K

    @property
    def scales(self) -> np.ndarray:
        """float64 [G, N]: the real value of one step, per group and column."""
        return grid_scales(self.column_scale, self.multiplier)

    def codes(self) -> np.ndarray:
        """int8 [K, N] in [-7, 7]."""
        return unpack_int4(self.packed, self.rows)

    def dequantize(self) -> np.ndarray:
        """float64 [K, N]: codes times their scales."""
        return self.codes() * row_scales(self.scales, self.group, self.rows)

    @property
    def nbytes(self) -> int:
        """What the bundle stores: packed codes, column scales and (grouped) uint8 multipliers."""
        return int(self.packed.nbytes + self.column_scale.nbytes + (self.multiplier.nbytes if self.group else 0))


def packed_bytes(rows: int, columns: int, group: int) -> int:
    """Int4Weight.nbytes of a [rows, columns] weight, from its shape alone."""
    groups = -(-rows // group) if group else 0
    return -(-rows // (2 * PAIR_ROWS)) * PAIR_ROWS * columns + 4 * columns + groups * columns


def group_of_rows(rows: int, group: int) -> np.ndarray:
    """int [K]: the scale group of each input row (the last group may be shorter)."""
    return np.arange(rows) // group if group else np.zeros(rows, dtype=np.int64)


def row_scales(scales: np.ndarray, group: int, rows: int) -> np.ndarray:
    """[G, N] scales -> [K, N], each row's group scale."""
    return scales[group_of_rows(rows, group)]


def int4_scales(weight: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(column_scale float32 [N], multiplier uint8 [G, N]): per group and column, the clip among CLIP_FRACTIONS of
    its largest |w| whose round-to-nearest codes have the least squared error (clipping a few large weights
    buys finer steps for all the others: ~10% less output error than absmax / 7 on DeiT-tiny's GEMMs), first
    freely, which sets each column's base scale (its largest group scale / MAX_MULTIPLIER), then again with
    every scale on its column's grid of multiples. All-zero columns get base scale 1 (their codes are 0)."""
    w = weight.astype(np.float64)
    starts = np.arange(0, len(w), group or len(w))
    absmax = np.maximum.reduceat(np.abs(w), starts, axis=0)
    free = _best_clip(w, absmax, group, lambda scale: scale)
    column = free.max(axis=0) / MAX_MULTIPLIER
    column = np.where(column > 0, column, 1.0 / MAX_MULTIPLIER).astype(np.float32)
    if not group:
        return column, np.full(free.shape, MAX_MULTIPLIER, np.uint8)
    base = column.astype(np.float64)
    on_grid = _best_clip(w, absmax, group, lambda scale: np.clip(np.round(scale / base), 1, MAX_MULTIPLIER) * base)
    return column, np.round(on_grid / base).astype(np.uint8)


def _best_clip(w: np.ndarray, absmax: np.ndarray, group: int, grid) -> np.ndarray:
    """float64 [G, N]: per group and column, the scale grid(absmax * fraction / 7) of least squared rounding error."""
    starts = np.arange(0, len(w), group or len(w))
    best, best_error = absmax / INT4_MAX, np.full(absmax.shape, np.inf)
    for fraction in CLIP_FRACTIONS:
        scale = grid(np.where(absmax > 0, absmax * fraction / INT4_MAX, 1.0))
        rows = row_scales(scale, group, len(w))
        error = np.add.reduceat((w - round_int4(w, rows) * rows) ** 2, starts, axis=0)
        better = error < best_error
        best, best_error = np.where(better, scale, best), np.where(better, error, best_error)
    return best


def round_int4(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Round-to-nearest codes of `weight` at `scale` (broadcast), clipped to [-7, 7]."""
    return np.clip(np.round(weight / scale), -INT4_MAX, INT4_MAX).astype(np.int8)


def quantize_rtn(weight: np.ndarray, group: int) -> Int4Weight:
    """Round-to-nearest int4 of a float weight [K, N]: the baseline beside GPTQ."""
    column, multiplier = int4_scales(weight, group)
    return int4_weight(round_int4(weight, row_scales(grid_scales(column, multiplier), group, weight.shape[0])),
                       column, multiplier, group)


def grid_scales(column_scale: np.ndarray, multiplier: np.ndarray) -> np.ndarray:
    """float64 [G, N]: the scales int4_scales' (column_scale, multiplier) stand for."""
    return column_scale.astype(np.float64)[None, :] * multiplier


def int4_weight(codes: np.ndarray, column_scale: np.ndarray, multiplier: np.ndarray, group: int) -> Int4Weight:
    return Int4Weight(pack_int4(codes), column_scale, multiplier, group, codes.shape[0])


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """int8 [K, N] in [-8, 7] -> uint8 [ceil(K / 8) * 4, N] (K zero-padded to whole blocks of 8 rows)."""
    rows, columns = codes.shape
    padded = np.zeros((-(-rows // (2 * PAIR_ROWS)) * 2 * PAIR_ROWS, columns), dtype=np.uint8)
    padded[:rows] = codes.astype(np.uint8) & 0x0F
    blocks = padded.reshape(-1, 2, PAIR_ROWS, columns)
    return (blocks[:, 0] | (blocks[:, 1] << 4)).reshape(-1, columns)


def unpack_int4(packed: np.ndarray, rows: int) -> np.ndarray:
    """uint8 [ceil(K / 8) * 4, N] -> int8 [K, N], each nibble sign-extended by arithmetic shifts."""
    signed = packed.view(np.int8).reshape(-1, PAIR_ROWS, packed.shape[1])
    low = (signed << 4) >> 4
    high = signed >> 4
    return np.stack([low, high], axis=1).reshape(-1, packed.shape[1])[:rows]
