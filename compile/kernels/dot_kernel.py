"""DotKernel: which int8 dot-product instruction a CPU target has, and the register tiles that suit it.

A dot instruction computes C[lanes] += A[depth] . B[lanes, depth] (int32 accumulators). The packed
weight layout, the activation dtype and the register tiles all follow from it, so they live here as
data: the Relax side (compile.kernels) packs operands for the kernel, the schedule rule
(compile.schedule.int8_gemm) tiles and tensorizes with it, and both find it by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm.target import Target

from compile.kernels import amx
from compile.kernels.intrinsics import AVX2_8X2_INTRIN, NEON_8X2_INTRIN, SDOT_4X4_INTRIN, VNNI_16X4_INTRIN

STACK_BYTES = 1024  # TVM's CPU lowering keeps buffers below this on the stack, larger ones cost a call


@dataclass(frozen=True)
class DotKernel:
    """An int8 dot-product instruction family and the GEMM register tiles built on it.

    A tile's int32 accumulators (rows x vectors x lanes) must stay under STACK_BYTES: then they
    live on the stack, which LLVM turns into registers, instead of a workspace allocated per tile.
    """

    name: str
    intrin: str | None  # TensorIntrin for C[lanes] += A[depth] . B[lanes, depth]; None: vectorized widening multiply-add
    lanes: int  # int32 output columns per instruction (per vector register for the widening kernel)
    depth: int  # reduction elements per instruction; K is zero-padded to a multiple of it
    lhs_dtype: str | None  # activation dtype the instruction multiplies: the other 8-bit type is shifted
                           # by 128, int16 holds either exactly; None: the activation's own
    tiles: tuple[tuple[int, int], ...]  # (rows, column vectors) register tiles, preferred first
    k_block: int = 0  # K is padded to a multiple of this (0: of depth)
    tile_unit: bool = False  # AMX: accumulators in tile registers, one intrinsic per column panel (compile.kernels.amx)
    fallback: DotKernel | None = None  # for GEMMs of fewer than min_rows rows
    min_rows: int = 1
    tile_intrin: str | None = None  # a family of compile.kernels.arm_tiles: one intrinsic per register tile and
                                    # 16 k, instead of `intrin` per column vector and depth
    partial_lanes: int = 1  # int32 partial sums per output the tile accumulates, added after K (arm_tiles "c16")
    symmetric_rhs: bool = False  # exact only when B holds no -128 (compile.kernels checks; else the fallback)
    interleave_rhs: bool = False  # a runtime B [K, N] is packed by vector interleaves (compile.kernels.arm_tiles)
                                  # from a copy zero padded to whole tiles, instead of byte by byte

    def __post_init__(self):
        for rows, vectors in () if self.tile_unit else self.tiles:
            if rows * vectors * self.lanes * self.partial_lanes * 4 >= STACK_BYTES:
                raise ValueError(f"{self.name}: tile {rows}x{vectors} has {STACK_BYTES}+ bytes of accumulators")


# 32 zmm registers; 15 accumulators are enough to hide vpdpbusd's latency on two ports.
X86_VNNI = DotKernel("x86-vnni", VNNI_16X4_INTRIN, lanes=16, depth=4, lhs_dtype="uint8",
                     tiles=((5, 3), (7, 2), (15, 1)))
# One-row GEMMs (the classifier head): a broadcast A per column vector, 16 columns.
ARM_SDOT_GEMV = DotKernel("arm-sdot-gemv", SDOT_4X4_INTRIN, lanes=4, depth=4, lhs_dtype="int8", tiles=((1, 4),))
# 32 NEON q registers: a tile's accumulators, one 16-byte A per row (SDOT by element takes its 4-byte groups as
# lanes), one B group (compile.kernels.arm_tiles); 8 x 8: 80 instructions per 64 SDOTs, 4 x 16: 84.
ARM_SDOT = DotKernel("arm-sdot", None, lanes=4, depth=4, lhs_dtype="int8", tiles=((8, 2), (6, 3), (4, 4)),
                     k_block=16, tile_intrin="sdot", fallback=ARM_SDOT_GEMV, min_rows=2, interleave_rhs=True)
# x86 without VNNI: vpmaddwd on ymm; 16 registers (AVX2): 8 accumulators, 2 B, 1 A, 1 product.
X86_AVX2 = DotKernel("x86-avx2", AVX2_8X2_INTRIN, lanes=8, depth=2, lhs_dtype="int16",
                     tiles=((4, 2), (8, 1)))
# Intel AMX: 16 x 64-byte tiles, tdpbusd / tdpbssd take either activation sign (no shift); column panels of
# 2 tiles (32 columns), K in whole 64-byte tiles; a GEMM below one tile of rows (the classifier head) uses VNNI.
X86_AMX = DotKernel("x86-amx", None, lanes=amx.TILE_ROWS, depth=4, lhs_dtype=None,
                    tiles=((amx.TILE_ROWS, amx.PANEL_COLUMNS // amx.TILE_ROWS),), k_block=amx.K_BLOCK, tile_unit=True,
                    fallback=X86_VNNI, min_rows=amx.TILE_ROWS)
# ARMv8.0 NEON (Cortex-A72, generic aarch64) without the c16 tiles: smull + sadalp; 8 int32 lanes are 2 q registers.
ARM_NEON_WIDENING = DotKernel("arm-neon", NEON_8X2_INTRIN, lanes=8, depth=2, lhs_dtype="int8",
                              tiles=((6, 2), (4, 2), (12, 1)))
# The c16 tiles (compile.kernels.arm_tiles): 4 partial sums per output, rows x 4 * vectors of them in registers
# with a row of A and 4 columns of B; 4 x 4: 56 instructions per 256 multiply-adds.
ARM_NEON = DotKernel("arm-neon-c16", None, lanes=4, depth=16, lhs_dtype="int8", tiles=((4, 1), (5, 1), (2, 2)),
                     tile_intrin="c16", partial_lanes=4, symmetric_rhs=True, fallback=ARM_NEON_WIDENING, min_rows=2)


def _widening(vector_bits: int) -> DotKernel:
    """Any other llvm target (x86 before AVX2, other ISAs): a vectorized int32 multiply-add, left to LLVM."""
    lanes = max(1, vector_bits // 32)
    vectors = max(1, 16 // lanes)  # column tiles of 16 int32
    return DotKernel(f"widening-{vector_bits}", None, lanes=lanes, depth=1, lhs_dtype=None,
                     tiles=((4, vectors), (6, vectors)))


def kernel_by_name(name: str) -> DotKernel:
    """The DotKernel a packed GEMM block was built for (its name is recorded in the block's annotations)."""
    for kernel in (X86_AMX, X86_VNNI, X86_AVX2, ARM_SDOT, ARM_SDOT_GEMV, ARM_NEON, ARM_NEON_WIDENING):
        if kernel.name == name:
            return kernel
    if name.startswith("widening-"):
        return _widening(int(name.removeprefix("widening-")))
    raise ValueError(f"unknown int8 dot kernel '{name}'")


def dot_kernel_for(target: Target) -> DotKernel:
    """The best exact int8 dot product an llvm target offers (AMX, AVX-512 VNNI, AVX2, ARM dotprod, NEON,
    else the widening fallback)."""
    from tvm.target.codegen import llvm_get_cpu_features, llvm_get_vector_width

    features = llvm_get_cpu_features(target)
    if amx.uses_amx(target):
        return X86_AMX
    if "avx512vnni" in features:
        return X86_VNNI
    if "avx2" in features:
        return X86_AVX2
    if "dotprod" in features:
        return ARM_SDOT
    if "neon" in features and str(target.attrs.get("mtriple", "")).startswith("aarch64"):
        return ARM_NEON
    return _widening(llvm_get_vector_width(target))


PADDING_TOLERANCE = 1.1  # a less preferred tile must save more than 10% padded work to be chosen


def choose_tile(kernel: DotKernel, m: int, n: int) -> tuple[int, int]:
    """(rows, column vectors): the most preferred register tile whose padded M x N work is within
    PADDING_TOLERANCE of the least padded one (N = 197 tokens pads 30% with 64 columns, 14% with 32)."""

    def padded_work(tile: tuple[int, int]) -> int:
        rows, columns = min(tile[0], m), tile[1] * kernel.lanes
        return math.ceil(m / rows) * rows * math.ceil(n / columns) * columns

    least = min(padded_work(tile) for tile in kernel.tiles)
    rows, vectors = next(tile for tile in kernel.tiles if padded_work(tile) <= PADDING_TOLERANCE * least)
    return min(rows, m), vectors
