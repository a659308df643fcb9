"""Symmetric int4 weights, two per byte: the storage of a w4a8 GEMM's weight [K, N].

Codes q in [-7, 7] (symmetric; the nibble's -8 is never produced), real weight = q * scale[g(k), n]:
one scale per output column (`group` 0) or per group of `group` consecutive input rows (K) and
column. Scales are stored in two levels, a float32 scale per column times a float16 ratio per
(group, column) in (0, 1]: float16 alone would underflow (folded weights reach scales of 1e-6),
and the ratio costs 2 bytes per group instead of 4.

Packed layout (uint8 [ceil(K / 8) * 4, N]): K in blocks of 8 rows; byte (4b + j, n) holds row
8b + j in its low nibble and row 8b + 4 + j in its high nibble (j < 4). A dot-product GEMM packs
this [K/2, N] array into its panels exactly as it packs an int8 [K, N] weight ([N/NR, K/D, NR, D],
D = 4 for VNNI, SDOT and AMX), so one NR x 4 byte load holds the operands of two consecutive depth
steps, low nibbles the first, high nibbles the second. Widening costs two or three instructions
per vector, with no table and no sign extension: `b << 4` (NEON `shl .16b`; x86 `vpsllw` + mask
0xF0) and `b & 0xF0` are 16 q exactly in an int8 lane, the dot instructions run on them unchanged
(|16 q| <= 112, so SMULL's int16 pairs and VNNI's int32 lanes cannot overflow) and the 1/16 goes
into the epilogue's scale. `unpack_int4` reads the bytes the other exact way (arithmetic shifts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT4_MAX = 7
GROUPS = (0, 32, 64, 128)  # input rows per scale; 0: one scale per output column
PAIR_ROWS = 4  # a byte holds rows k and k + 4: one dot-product depth step apart
MIN_RATIO = np.float16(2.0**-14)  # the smallest normal float16: a group's scale never underflows
CLIP_FRACTIONS = np.linspace(0.5, 1.0, 21)  # clips tried per group and column, in units of its largest |w|


@dataclass(frozen=True)
class Int4Weight:
    """One GEMM's packed int4 weight with its scales (see the module docstring for the layout)."""

    packed: np.ndarray  # uint8 [ceil(K / 8) * 4, N]
    column_scale: np.ndarray  # float32 [N]
    group_ratio: np.ndarray  # float16 [G, N] in (0, 1]; all ones for per-column scales (G = 1, not stored)
    group: int  # input rows per scale group; 0: per output column
    rows: int  # K

    @property
    def scales(self) -> np.ndarray:
        """float32 [G, N]: the real value of one step, per group and column."""
        return (self.column_scale[None, :] * self.group_ratio.astype(np.float32)).astype(np.float32)

    def codes(self) -> np.ndarray:
        """int8 [K, N] in [-7, 7]."""
        return unpack_int4(self.packed, self.rows)

    def dequantize(self) -> np.ndarray:
        """float64 [K, N]: codes times their scales."""
        return self.codes() * row_scales(self.scales.astype(np.float64), self.group, self.rows)

    @property
    def nbytes(self) -> int:
        """What the bundle stores: packed codes, column scales and (grouped) float16 ratios."""
        return int(self.packed.nbytes + self.column_scale.nbytes + (self.group_ratio.nbytes if self.group else 0))


def packed_bytes(rows: int, columns: int, group: int) -> int:
    """Int4Weight.nbytes of a [rows, columns] weight, from its shape alone."""
    groups = -(-rows // group) if group else 0
    return -(-rows // (2 * PAIR_ROWS)) * PAIR_ROWS * columns + 4 * columns + 2 * groups * columns


def group_of_rows(rows: int, group: int) -> np.ndarray:
    """int [K]: the scale group of each input row (the last group may be shorter)."""
    return np.arange(rows) // group if group else np.zeros(rows, dtype=np.int64)


def row_scales(scales: np.ndarray, group: int, rows: int) -> np.ndarray:
    """[G, N] scales -> [K, N], each row's group scale."""
    return scales[group_of_rows(rows, group)]


def int4_scales(weight: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(column_scale float32 [N], group_ratio float16 [G, N]): per group and column, the clip among CLIP_FRACTIONS of
    its largest |w| whose round-to-nearest codes have the least squared error (clipping a few large weights
    buys finer steps for all the others: ~10% less output error than absmax / 7 on DeiT-tiny's GEMMs, for
    round-to-nearest and GPTQ alike). All-zero columns get scale 1 (their codes are 0 anyway)."""
    w = weight.astype(np.float64)
    starts = np.arange(0, len(w), group or len(w))
    absmax = np.maximum.reduceat(np.abs(w), starts, axis=0)
    best, best_error = absmax / INT4_MAX, np.full(absmax.shape, np.inf)
    for fraction in CLIP_FRACTIONS:
        scale = np.where(absmax > 0, absmax * fraction / INT4_MAX, 1.0)
        rows = row_scales(scale, group, len(w))
        error = np.add.reduceat((w - round_int4(w, rows) * rows) ** 2, starts, axis=0)
        better = error < best_error
        best, best_error = np.where(better, scale, best), np.where(better, error, best_error)
    column = best.max(axis=0)
    column = np.where(column > 0, column, 1.0).astype(np.float32)
    ratio = np.maximum((best / column.astype(np.float64)).astype(np.float16), MIN_RATIO)
    return column, ratio


def round_int4(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Round-to-nearest codes of `weight` at `scale` (broadcast), clipped to [-7, 7]."""
    return np.clip(np.round(weight / scale), -INT4_MAX, INT4_MAX).astype(np.int8)


def quantize_rtn(weight: np.ndarray, group: int) -> Int4Weight:
    """Round-to-nearest int4 of a float weight [K, N]: the baseline beside GPTQ."""
    column, ratio = int4_scales(weight, group)
    scales = column[None, :] * ratio.astype(np.float32)
    return int4_weight(round_int4(weight, row_scales(scales, group, weight.shape[0])), column, ratio, group)


def int4_weight(codes: np.ndarray, column_scale: np.ndarray, group_ratio: np.ndarray, group: int) -> Int4Weight:
    return Int4Weight(pack_int4(codes), column_scale, group_ratio, group, codes.shape[0])


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
