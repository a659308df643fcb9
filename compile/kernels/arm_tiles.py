"""Register-tile tensor intrinsics of the ARM int8 GEMMs: one intrinsic is a whole rows x columns tile over 16 k.

The schedule (compile.schedule.int8_gemm) keeps a tile's accumulators in registers for all of K and calls
the intrinsic once per 16 k; inside it every byte of A and B is loaded once, 16 at a time (no broadcasts).

- "sdot" (dotprod: Cortex-A76 / A78): B packed [N/NR, K/4, NR, 4]. SDOT by element takes A's 4-byte group g
  as lane g of the row's 16-byte register (sdot v.4s, b.16b, a.4b[g]); per 16 k: rows + 4 * vectors loads for
  4 * rows * vectors SDOTs (8 x 8: 80 instructions per 64 SDOTs). Groups outermost: the live registers are the
  accumulators, one A per row and one B group (rows * vectors + rows + vectors <= 32).
- "c16" (ARMv8.0 NEON: Cortex-A72): B packed [N/NR, K/16, NR, 16], a column's 16 k contiguous like a row of A.
  Per (row, column): SMULL multiplies the low 8 bytes (int16 products), SMLAL2 adds the high 8 bytes' products
  to them, SADALP adds int16 pairs into 4 int32 partial sums: 3 instructions per 16 multiply-adds, where the
  per-column layout of the widening kernels took 4 and a broadcast load. Partial lane j holds k = 2j, 2j + 1,
  2j + 8, 2j + 9 of each block (`c16_position`); PARTIAL_SUM adds a tile's 4 lanes once, after K (ADDP).
  Two int16 products can overflow only when both are (-128) * (-128): the kernel is exact when B holds no -128
  (compile.kernels picks it only then: symmetric int8 weights and requantized operands are within +-127).

The runtime operand of a batch matmul b [K, N] (attention's v) is packed for "sdot" by an interleave: `depth`
rows of a tile's columns loaded as vectors, stored as one interleaved vector (ST4), where a copy byte by byte
took 2 instructions a byte (DeiT-tiny's p @ v: ~90 k of its 834 k instructions on the A76).
"""

from __future__ import annotations

from tvm.script import tirx as T

from compile.kernels.intrinsics import register_once

C16_LANES = 4  # int32 partial sums per (row, column) of the c16 kernel


def c16_position(lane, step):
    """Byte of a 16-k block that partial lane `lane` (0..3) adds at its step `step` (0..3): 2 lane + {0, 1, 8, 9}."""
    return lane * 2 + step % 2 + step // 2 * 8


def _sdot_tile(rows: int, vectors: int, implement: bool):
    """The description (implement False) or the implementation of a rows x 4 * vectors SDOT tile."""
    columns, sdot = vectors * 4, "llvm.aarch64.neon.sdot.v4i32.v16i8"

    @T.prim_func(s_tir=True)
    def tile(a: T.handle, b: T.handle, c: T.handle) -> None:
        a_stride = T.int32()
        c_stride = T.int32()
        A = T.match_buffer(a, (rows, 16), "int8", offset_factor=1, strides=[a_stride, 1])
        B = T.match_buffer(b, (4, columns, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (rows, columns), "int32", offset_factor=1, strides=[c_stride, 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:columns], A[0:rows, 0:16], B[0:4, 0:columns, 0:4])
            T.writes(C[0:rows, 0:columns])
            if implement:
                for g in T.unroll(4):
                    for i in T.unroll(rows):
                        for v in T.unroll(vectors):
                            C[i, T.ramp(v * 4, 1, 4)] = T.call_llvm_pure_intrin(
                                T.llvm_lookup_intrinsic_id(sdot),
                                C.vload([i, v * 4], "int32x4"),
                                B.vload([g, v * 4, 0], "int8x16"),
                                T.reinterpret(T.Shuffle([T.reinterpret(A.vload([i, 0], "int8x16"), dtype="int32x4")],
                                                        [g, g, g, g]), dtype="int8x16"),
                                dtype="int32x4",
                            )
            else:
                for i, n, k in T.grid(rows, columns, 16):
                    with T.sblock("update"):
                        vi, vn, vk = T.axis.remap("SSR", [i, n, k])
                        C[vi, vn] = C[vi, vn] + T.cast(A[vi, vk], "int32") * T.cast(B[vk // 4, vn, vk % 4], "int32")

    return tile


def _c16_tile(rows: int, vectors: int, implement: bool):
    """The description (implement False) or the implementation of a rows x 4 * vectors c16 tile."""
    columns = vectors * 4
    smull, saddlp = "llvm.aarch64.neon.smull.v8i16", "llvm.aarch64.neon.saddlp.v4i32.v8i16"
    low, high = list(range(8)), list(range(8, 16))

    @T.prim_func(s_tir=True)
    def tile(a: T.handle, b: T.handle, c: T.handle) -> None:
        a_stride = T.int32()
        c_stride_row = T.int32()
        c_stride_column = T.int32()
        A = T.match_buffer(a, (rows, 16), "int8", offset_factor=1, strides=[a_stride, 1])
        B = T.match_buffer(b, (1, columns, 16), "int8", offset_factor=1)
        C = T.match_buffer(c, (rows, columns, C16_LANES), "int32", offset_factor=1,
                           strides=[c_stride_row, c_stride_column, 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:columns, 0:C16_LANES], A[0:rows, 0:16], B[0:1, 0:columns, 0:16])
            T.writes(C[0:rows, 0:columns, 0:C16_LANES])
            if implement:
                for n in T.unroll(columns):
                    for i in T.unroll(rows):
                        C[i, n, T.ramp(0, 1, C16_LANES)] = C.vload([i, n, 0], "int32x4") + T.call_llvm_pure_intrin(
                            T.llvm_lookup_intrinsic_id(saddlp),
                            T.call_llvm_pure_intrin(
                                T.llvm_lookup_intrinsic_id(smull), T.Shuffle([A.vload([i, 0], "int8x16")], low),
                                T.Shuffle([B.vload([0, n, 0], "int8x16")], low), dtype="int16x8")
                            + T.call_llvm_pure_intrin(
                                T.llvm_lookup_intrinsic_id(smull), T.Shuffle([A.vload([i, 0], "int8x16")], high),
                                T.Shuffle([B.vload([0, n, 0], "int8x16")], high), dtype="int16x8"),
                            dtype="int32x4",
                        )
            else:
                for i, n, lane, step in T.grid(rows, columns, C16_LANES, 4):
                    with T.sblock("update"):
                        vi, vn, vl, vs = T.axis.remap("SSSR", [i, n, lane, step])
                        C[vi, vn, vl] = C[vi, vn, vl] + T.cast(A[vi, c16_position(vl, vs)], "int32") * T.cast(
                            B[0, vn, c16_position(vl, vs)], "int32")

    return tile


def _partial_sum(implement: bool):
    """S[4] += the sums of G[4, 4]'s rows: 4 columns' c16 partial lanes in 3 ADDP (description: implement False)."""
    addp = "llvm.aarch64.neon.addp.v4i32"

    @T.prim_func(s_tir=True)
    def partial_sum(g: T.handle, s: T.handle) -> None:
        G = T.match_buffer(g, (4, C16_LANES), "int32", offset_factor=1)
        S = T.match_buffer(s, (4,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(S[0:4], G[0:4, 0:C16_LANES])
            T.writes(S[0:4])
            if implement:
                S[T.ramp(0, 1, 4)] = S.vload([0], "int32x4") + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(addp),
                    T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(addp), G.vload([0, 0], "int32x4"),
                                            G.vload([1, 0], "int32x4"), dtype="int32x4"),
                    T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(addp), G.vload([2, 0], "int32x4"),
                                            G.vload([3, 0], "int32x4"), dtype="int32x4"),
                    dtype="int32x4",
                )
            else:
                for n, lane in T.grid(4, C16_LANES):
                    with T.sblock("sum"):
                        vn, vl = T.axis.remap("SR", [n, lane])
                        S[vn] = S[vn] + G[vn, vl]

    return partial_sum


def _interleave(depth: int, columns: int, implement: bool):
    """The description (implement False) or the implementation of B[columns, depth] = A[depth, columns]."""

    @T.prim_func(s_tir=True)
    def interleave(a: T.handle, b: T.handle) -> None:
        a_stride = T.int32()
        A = T.match_buffer(a, (depth, columns), "int8", offset_factor=1, strides=[a_stride, 1])
        B = T.match_buffer(b, (columns, depth), "int8", offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:depth, 0:columns])
            T.writes(B[0:columns, 0:depth])
            if implement:
                B[0, T.ramp(0, 1, columns * depth)] = T.Shuffle(
                    [A.vload([row, 0], f"int8x{columns}") for row in range(depth)],
                    [row * columns + column for column in range(columns) for row in range(depth)])
            else:
                for n, k in T.grid(columns, depth):
                    with T.sblock("interleave"):
                        vn, vk = T.axis.remap("SS", [n, k])
                        B[vn, vk] = A[vk, vn]

    return interleave


def interleave_intrinsic(depth: int, columns: int) -> str:
    """The name of the TensorIntrin that packs `depth` rows of `columns` bytes into column groups, registered on
    first use."""
    name = f"edgevit_interleave_{depth}x{columns}"
    register_once(name, (_interleave(depth, columns, False), _interleave(depth, columns, True)))
    return name


TILE_INTRINSICS = {"sdot": _sdot_tile, "c16": _c16_tile}  # DotKernel.tile_intrin -> (rows, vectors, implement)
PARTIAL_SUM_INTRIN = "edgevit_c16_partial_sum"
register_once(PARTIAL_SUM_INTRIN, (_partial_sum(False), _partial_sum(True)))


def tile_intrinsic(family: str, rows: int, vectors: int) -> str:
    """The name of the register-tile TensorIntrin of `family` for a rows x vectors tile, registered on first use."""
    name = f"edgevit_{family}_tile_{rows}x{vectors}"
    tile = TILE_INTRINSICS[family]
    register_once(name, (tile(rows, vectors, False), tile(rows, vectors, True)))
    return name
