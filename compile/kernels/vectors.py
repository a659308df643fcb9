"""How wide a target's vectors are: the one number hand-written kernels and schedule rules size their loops by."""

from __future__ import annotations

import tvm
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width


def vector_lanes(target: Target, dtype: str) -> int:
    """SIMD lanes of `dtype` on the target (16 fp32 on AVX-512, 4 on NEON)."""
    bits = llvm_get_vector_width(target) if target.kind.name == "llvm" else 128
    return max(1, bits // tvm.runtime.DataType(dtype).bits)
