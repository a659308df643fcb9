"""NarrowConstantMultipliers: marks the int64 parameters of kernels that every call gives an int32-sized constant.

int8-full requantizes with int64 products of an int32 value and a per-channel dyadic multiplier (below 2^31,
compile.quant.fixed_point). The multipliers reach each fused kernel as int64 parameters, so LLVM cannot tell
they fit in 32 bits and multiplies 64-bit lanes one by one (NEON has no 64-bit vector multiply). This pass runs
on the fused module, where the call sites show the constants, and lists in the kernel's INT32_PARAMS attribute
the parameters whose every value fits in int32; a schedule rule then reads them as int32 and sign-extends them
(compile.schedule.int8_gemm), the same values in a product LLVM makes a widening multiply (SMULL, VPMULDQ).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx

INT32_PARAMS = "edgevit.int32_params"  # PrimFunc attribute: indices of int64 parameters whose values fit in int32


def _fits_int32(expr: relax.Expr) -> bool:
    if not isinstance(expr, tvm.ir.expr.GenericConst) or str(expr.ty.dtype) != "int64":
        return False
    values, limits = expr.value.numpy(), np.iinfo(np.int32)
    return values.size == 0 or (values.min() >= limits.min and values.max() <= limits.max)


def int32_params(mod: tvm.IRModule) -> dict[str, list[int]]:
    """PrimFunc name -> indices of its int64 parameters that every call gives a constant fitting in int32."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    fits: dict[str, set[int]] = {}

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir) and isinstance(expr.args[1], relax.Tuple):
            name = expr.args[0].name_hint
            good = {i for i, arg in enumerate(expr.args[1].fields) if _fits_int32(arg)}
            fits[name] = fits[name] & good if name in fits else good

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return {name: sorted(indices) for name, indices in fits.items() if indices}


@tvm.transform.module_pass(opt_level=0, name="NarrowConstantMultipliers")
class NarrowConstantMultipliers:
    """Mark each PrimFunc's int32-sized constant int64 parameters (INT32_PARAMS; see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for name, indices in int32_params(mod).items():
            func = mod[name]
            if isinstance(func, tirx.PrimFunc):
                mod[mod.get_global_var(name)] = func.with_attr(INT32_PARAMS, indices)
        return mod
