"""Intel AMX for the packed int8 GEMM: one tensor intrinsic computes a whole column panel.

AMX multiplies 16 x 64-byte tiles held in 8 tile registers: tdpbusd / tdpbssd add A[16, 64] . B[16 x 4-byte
groups, 16 columns] into an int32 C[16, 16], 16K multiply-adds in one instruction, one every 16 cycles (16x
a 512-bit vpdpbusd per cycle); either sign of activation, so no shift and no correction term. B's tile is
exactly the VNNI packing (compile.kernels.packed_gemm: [N/NR, K/4, NR, 4]), so the weights pack the same
way; K is padded to whole 64-byte tiles instead of 4.

The GEMM runs as column panels (compile.schedule.int8_gemm): one panel is every row of the output times
PANEL_COLUMNS columns, so its slice of B (K x 32 bytes) stays in L1 while the rows stream past, and the
panel's int32 result (at most M x 32) stays in L1 for the fused epilogue that reads it next. Inside a
panel, 2 x 2 accumulator tiles (32 rows x 32 columns) take 4 tile registers, two A and two B tiles the
other 4; a 16-row tail uses half of them.

Tile registers do not exist for TVM, so the panel's accumulators are zeroed by the panel kernel itself
(tilezero): the GEMM's reduction init is matched by the zero intrinsic, whose implementation is empty
(zeroing the panel in memory was a memset per panel: a fifth of the GEMM in a prototype). The two intrinsics are only ever
used together, by the one schedule in compile.schedule.int8_gemm (panel_intrinsics gives both).

Linux gives AMX state only to a process that asks (arch_prctl ARCH_REQ_XCOMP_PERM); LOAD_TIME_REQUEST is
linked into every model library that holds these kernels, so any loader (the Python runtime, the native
runner, a TVM RPC server) gets it when the library loads.
"""

from __future__ import annotations

from pathlib import Path

from tvm import tirx
from tvm.script import tirx as T

from compile.kernels.intrinsics import register_once

TILE_ROWS = 16
TILE_BYTES = 64  # bytes of one tile row: 64 int8 of K for A, 16 groups of 4 for B, 16 int32 for C
PANEL_COLUMNS = 32  # two B tiles of 16 columns
K_BLOCK = TILE_BYTES

LOAD_TIME_REQUEST = r"""
// edgevit: AMX kernels need the tile state, which Linux grants per process on request (5.16+).
#include <sys/syscall.h>
#include <unistd.h>
__attribute__((constructor)) static void edgevit_request_amx_tiles(void) {
  syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */);
}
"""

def _config_word(word):
    """Word `word` of ldtilecfg's 64-byte palette-1 config as 16 int32: the palette id (1), then bytes per
    row of tiles 0-7 (uint16 pairs, words 4-7), then rows of tiles 0-7 (bytes, words 12-13): every tile
    is 16 rows of 64 bytes."""
    return tirx.Select(word == 0, 1, tirx.Select(tirx.all(word >= 4, word < 8), TILE_BYTES * 0x10001, tirx.Select(
        tirx.all(word >= 12, word < 14), TILE_ROWS * 0x01010101, 0)))


def _dot_instruction(lhs_dtype: str) -> str:
    return {"uint8": "llvm.x86.tdpbusd", "int8": "llvm.x86.tdpbssd"}[lhs_dtype]


def _panel_intrinsic(lhs_dtype: str, m_pad: int, k_pad: int):
    columns, groups, k_blocks = PANEL_COLUMNS, k_pad // 4, k_pad // K_BLOCK
    pairs, tail = divmod(m_pad // TILE_ROWS, 2)  # 32-row blocks on 2 x 2 tiles, then a 16-row one on 1 x 2
    dot = _dot_instruction(lhs_dtype)

    @T.prim_func(s_tir=True)
    def description(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (m_pad, k_pad), lhs_dtype, offset_factor=1)
        B = T.match_buffer(b, (groups, columns, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (m_pad, columns), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:m_pad, 0:columns], A[0:m_pad, 0:k_pad], B[0:groups, 0:columns, 0:4])
            T.writes(C[0:m_pad, 0:columns])
            for i, j, k in T.grid(m_pad, columns, k_pad):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], "int32") * T.cast(B[vk // 4, vj, vk % 4], "int32")

    @T.macro
    def row_block(A, B, C, first_row, row_tiles, a_stride, c_stride):
        """C[first_row : + 16 row_tiles, 0:32] = A . B; tiles 0-3 accumulate (2 i + j), 4-5 hold A, 6-7 B."""
        for t in T.unroll(2 * row_tiles):
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilezero", T.int8(t)))
        for kb in range(k_blocks):
            for i in T.unroll(row_tiles):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.int8(4 + i),
                                              T.address_of(A[first_row + i * TILE_ROWS, kb * K_BLOCK]),
                                              T.int64(a_stride)))
            for j in T.unroll(2):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.int8(6 + j),
                                              T.address_of(B[kb * TILE_ROWS, j * 16, 0]), T.int64(columns * 4)))
            for i in T.unroll(row_tiles):
                for j in T.unroll(2):
                    T.evaluate(T.call_llvm_intrin("void", dot, T.int8(2 * i + j), T.int8(4 + i), T.int8(6 + j)))
        for i in T.unroll(row_tiles):
            for j in T.unroll(2):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.int8(2 * i + j),
                                              T.address_of(C[first_row + i * TILE_ROWS, j * 16]),
                                              T.int64(c_stride * 4)))

    @T.prim_func(s_tir=True)
    def implementation(a: T.handle, b: T.handle, c: T.handle) -> None:
        a_stride = T.int32()
        c_stride = T.int32()
        A = T.match_buffer(a, (m_pad, k_pad), lhs_dtype, strides=[a_stride, 1], offset_factor=1)
        B = T.match_buffer(b, (groups, columns, 4), "int8", strides=[columns * 4, 4, 1], offset_factor=1)
        C = T.match_buffer(c, (m_pad, columns), "int32", strides=[c_stride, 1], offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:m_pad, 0:columns], A[0:m_pad, 0:k_pad], B[0:groups, 0:columns, 0:4])
            T.writes(C[0:m_pad, 0:columns])
            config = T.alloc_buffer((16,), "int32")
            for word in T.unroll(16):
                config[word] = _config_word(word)
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", T.address_of(config[0])))
            for block in range(pairs):
                row_block(A, B, C, block * 2 * TILE_ROWS, 2, a_stride, c_stride)
            for _ in range(tail):
                row_block(A, B, C, pairs * 2 * TILE_ROWS, 1, a_stride, c_stride)
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilerelease"))

    return description, implementation


def _zero_intrinsic(m_pad: int):
    """The panel's reduction init: C = 0, done by the panel kernel's tilezero (see the module docstring)."""
    columns = PANEL_COLUMNS

    @T.prim_func(s_tir=True)
    def description(c: T.handle) -> None:
        C = T.match_buffer(c, (m_pad, columns), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:m_pad, 0:columns])
            for i, j in T.grid(m_pad, columns):
                with T.sblock("init"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    C[vi, vj] = 0

    @T.prim_func(s_tir=True)
    def implementation(c: T.handle) -> None:
        C = T.match_buffer(c, (m_pad, columns), "int32", strides=[T.int32(), 1], offset_factor=1)
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:m_pad, 0:columns])
            T.evaluate(0)

    return description, implementation


def panel_intrinsics(lhs_dtype: str, m_pad: int, k_pad: int) -> tuple[str, str]:
    """(init, update) TensorIntrin names for one column panel of C[m_pad, 32] += A[m_pad, k_pad] . B."""
    if m_pad % TILE_ROWS or k_pad % K_BLOCK:
        raise ValueError(f"AMX panel: M {m_pad} and K {k_pad} must be whole tiles ({TILE_ROWS} rows, {K_BLOCK} bytes)")
    zero, update = f"edgevit_amx_zero_{m_pad}", f"edgevit_amx_{lhs_dtype}_{m_pad}x{k_pad}"
    register_once(zero, _zero_intrinsic(m_pad))
    register_once(update, _panel_intrinsic(lhs_dtype, m_pad, k_pad))
    return zero, update


def uses_amx(target) -> bool:
    """Whether the int8 GEMMs for this llvm target run on AMX (its features name the tile unit and VNNI)."""
    from tvm.target.codegen import llvm_get_cpu_features

    return target.kind.name == "llvm" and {"amx-int8", "amx-tile", "avx512vnni"} <= set(llvm_get_cpu_features(target))


def with_load_time_request(fcompile=None):
    """A library compiler (export_library's fcompile) that also links LOAD_TIME_REQUEST into the library."""
    from tvm.support import cc

    link = fcompile or cc.create_shared

    def compile_library(output: str, files: list[str], **kwargs):
        source = Path(files[0]).parent / "edgevit_amx_request.c"
        source.write_text(LOAD_TIME_REQUEST)
        return link(output, [*files, str(source)], **kwargs)

    return compile_library
