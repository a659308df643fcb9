"""int8-full's row kernels (compile.quant.row_kernels) equal the numpy reference bit for bit, on the host and on
an emulated rpi5, for inputs beyond what a calibrated model gives: constant rows (zero variance), odd widths,
int32 outputs (norm_pre into the residual stream), a row's maximum at its last key, proportional-attention
biases, per-head probability scales of 255 << 0..3, uniform rows."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from compile.quant import integer_params as P
from compile.quant.graph import Emitter
from compile.quant.row_kernels import emit_layer_norm, emit_softmax
from targets import load_preset
from tests import integer_reference
from tests.helpers import cpu_executable, cross_compiled_library

LAYER_NORMS = {  # name: (rows, channels, output dtype, output range)
    "ln_to_int8": (197, 192, "int8", (-127, 127)),
    "ln_odd_to_residual": (5, 13, "int32", (-P.RESIDUAL_CLAMP, P.RESIDUAL_CLAMP)),
    "ln_qk_heads": (591, 64, "int8", (-127, 127)),
}
SOFTMAXES = {  # name: (heads, tokens, with proportional-attention bias)
    "softmax": (3, 197, False),
    "softmax_tome": (3, 189, True),
    "softmax_odd": (2, 7, True),
}


def _layer_norm_case(rng, rows: int, channels: int, dtype: str, low: int, high: int):
    x = rng.integers(-(1 << 22), 1 << 22, (rows, channels)).astype(np.int32)
    x[0] = 12345  # zero variance: the division by max(isqrt(eps), 1)
    x[1, ::2] = -(1 << 22)
    params = P.LayerNormParams(gamma=rng.integers(-(1 << 21), 1 << 21, channels).astype(np.int64),
                               beta=rng.integers(-(1 << 36), 1 << 36, channels).astype(np.int64),
                               eps=int(rng.integers(0, 1 << 12)), low=low, high=high)
    return x, params, integer_reference.layer_norm(x.astype(np.int64), params)


def _softmax_case(rng, heads: int, tokens: int, with_bias: bool):
    logits = rng.integers(-(1 << 14), 1 << 14, (heads, tokens, tokens)).astype(np.int32)
    logits[:, 0, -1] = 1 << 15  # the maximum at the last key
    logits[:, 1] = 77  # uniform attention
    bias = rng.integers(0, 1 << 10, tokens).astype(np.int32) if with_bias else None
    exponent = P.Requant.of(1.7e-3 * np.log2(np.e) * 2**P.EXP_FRAC)
    levels = (255 << np.arange(heads) % 4).astype(np.int64).reshape(heads, 1, 1)
    expected = integer_reference.integer_softmax(logits.astype(np.int64), exponent, levels, bias)
    return logits, bias, exponent, levels, expected


def _suite(target):
    """A Relax module with one function per case, its inputs and the reference outputs."""
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    em = Emitter(bb, target)
    inputs, expected = {}, {}
    for name, (rows, channels, dtype, (low, high)) in LAYER_NORMS.items():
        x, params, expected[name] = _layer_norm_case(rng, rows, channels, dtype, low, high)
        var = relax.Var("x", relax.TensorType(x.shape, "int32"))
        with bb.function(name, [var]):
            with bb.dataflow():
                out = bb.emit_output(emit_layer_norm(em, var, params, dtype))
            bb.emit_func_output(out)
        inputs[name] = [x]
    for name, (heads, tokens, with_bias) in SOFTMAXES.items():
        logits, bias, exponent, levels, expected[name] = _softmax_case(rng, heads, tokens, with_bias)
        params = [relax.Var("logits", relax.TensorType(logits.shape, "int32"))]
        if bias is not None:
            params.append(relax.Var("bias", relax.TensorType(bias.shape, "int32")))
        with bb.function(name, params):
            with bb.dataflow():
                out = bb.emit_output(emit_softmax(em, params[0], params[1] if bias is not None else None,
                                                  exponent, levels))
            bb.emit_func_output(out)
        inputs[name] = [logits] if bias is None else [logits, bias]
    return bb.get(), inputs, expected


def _assert_exact(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for name, want in expected.items():
        assert want.min() < want.max(), name  # the case exercises the kernel's range
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_row_kernels_equal_the_reference_on_the_host():
    target = load_preset("host").target()
    module, inputs, expected = _suite(target)
    vm = relax.VirtualMachine(cpu_executable(module, target), tvm.cpu())
    got = {name: vm[name](*map(tvm.runtime.tensor, args)).numpy() for name, args in inputs.items()}
    assert {got[name].dtype for name in SOFTMAXES} == {np.dtype("uint8")}
    _assert_exact(got, expected)


@pytest.mark.slow
def test_row_kernels_equal_the_reference_on_an_emulated_rpi5(tmp_path):
    from tests.emulated_board import emulated_board, run_vm_functions

    module, inputs, expected = _suite(load_preset("rpi5").target())
    library = cross_compiled_library(module, "rpi5", tmp_path / "row_kernels.so")
    _assert_exact(run_vm_functions(emulated_board("cortex-a76"), library, inputs, tmp_path), expected)
