"""Tensor intrinsics for C[lanes] += A[depth] . B[lanes, depth] (int8 -> int32) with LLVM instructions.

Registered here rather than taken from tvm.s_tir.tensor_intrin because (a) importing that package
costs 30-40 s (it builds every GPU intrinsic too) and (b) its x86 VNNI template passes int32x16
operands, which LLVM 22's vpdpbusd (<64 x i8> operands) rejects. A is one group of `depth` bytes
broadcast to every lane; B holds `lanes` groups of `depth` bytes, contiguous.

The implementations are single expressions on purpose: a name bound to a value in TVMScript
becomes a local buffer, which the CPU lowering allocates (TVMBackendAllocWorkspace) on every tile.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

VNNI_16X4_INTRIN = "edgevit_vnni_u8s8_16x4"  # x86 AVX-512 VNNI vpdpbusd: uint8 A, int8 B
SDOT_4X4_INTRIN = "edgevit_sdot_s8s8_4x4"  # ARMv8.2 dotprod sdot: int8 A, int8 B
NEON_8X2_INTRIN = "edgevit_neon_smull_sadalp_8x2"  # ARMv8.0 NEON smull + sadalp: int8 A, int8 B
AVX2_8X2_INTRIN = "edgevit_avx2_pmaddwd_8x2"  # x86 AVX2 vpmaddwd: int16 A (a widened byte), int8 B


def _description(lanes: int, depth: int, a_dtype: str):
    @T.prim_func(s_tir=True)
    def description(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (depth,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, depth), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:depth], B[0:lanes, 0:depth])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, depth):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return description


def _dot_instruction(lanes: int, a_dtype: str, llvm_intrinsic: str):
    """One instruction computing 4-byte dot products per int32 lane (vpdpbusd, sdot)."""
    bytes_type = f"x{4 * lanes}"

    @T.prim_func(s_tir=True)
    def implementation(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic),
                C.vload([0], f"int32x{lanes}"),
                T.reinterpret(  # the 4 bytes of A as one int32, broadcast to every lane
                    T.broadcast(T.reinterpret(A.vload([0], a_dtype + "x4"), dtype="int32"), lanes),
                    dtype=a_dtype + bytes_type,
                ),
                B.vload([0, 0], "int8" + bytes_type),
                dtype=f"int32x{lanes}",
            )

    return _description(lanes, 4, a_dtype), implementation


def _neon_widening():
    """8 columns x 2 k: two smull give the 16 int16 products (exact: |a * b| <= 2^14), sadalp adds
    each column's pair into its int32 accumulator: 4 instructions per 16 multiply-adds."""

    @T.prim_func(s_tir=True)
    def implementation(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int8", offset_factor=1)
        B = T.match_buffer(b, (8, 2), "int8", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            for half in T.unroll(2):  # A's 2 bytes broadcast to 4 pairs; B's 16 bytes in halves
                C[T.ramp(half * 4, 1, 4)] = C[T.ramp(half * 4, 1, 4)] + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                    T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                        T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x2"), dtype="int16"), 4),
                                      dtype="int8x8"),
                        B.vload([half * 4, 0], "int8x8"),
                        dtype="int16x8",
                    ),
                    dtype="int32x4",
                )

    return _description(8, 2, "int8"), implementation


def _avx2_widening():
    """8 columns x 2 k: A comes widened to int16 (the pair is one broadcast), B's bytes are
    sign-extended to int16, vpmaddwd multiplies and adds each column's pair into int32 (exact: no
    int16 saturation with 8-bit operands), one add accumulates."""

    @T.prim_func(s_tir=True)
    def implementation(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (8, 2), "int8", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 8)] = C[T.ramp(T.int32(0), 1, 8)] + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8), dtype="int16x16"),
                T.Cast("int16x16", B.vload([0, 0], "int8x16")),
                dtype="int32x8",
            )

    return _description(8, 2, "int16"), implementation


def register_once(name: str, description_and_implementation) -> None:
    """Register a TensorIntrin unless one of that name exists (modules and shapes register on demand)."""
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, *description_and_implementation)


def vectorizable_rounding() -> None:
    """Let TVM's loop vectorizer take round-half-to-even (tirx.nearbyint: llvm.nearbyint, frinti / vrndscaleps).

    TVM 0.27 does not mark the op vectorizable, so a vectorized loop holding it (every requantizing GEMM
    write-back) was scalarized, and only LLVM's own loop vectorizer, when its cost model agreed, got the vectors
    back: the int8 GEMM + GELU epilogue of DeiT-tiny's fc1 ran scalar on the Cortex-A76 (39 instructions per
    output there, 19 with the rounding vectorized).
    """
    import tvm

    if tvm.ir.Op.get("tirx.nearbyint").get_attr("TVectorizable") is None:
        tvm.ir.register_op_attr("tirx.nearbyint", "TVectorizable", True)


vectorizable_rounding()
register_once(VNNI_16X4_INTRIN, _dot_instruction(16, "uint8", "llvm.x86.avx512.vpdpbusd.512"))
register_once(SDOT_4X4_INTRIN, _dot_instruction(4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8"))
register_once(NEON_8X2_INTRIN, _neon_widening())
register_once(AVX2_8X2_INTRIN, _avx2_widening())
