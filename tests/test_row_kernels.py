"""The row kernels (compile.kernels.row_kernels) and ToMe's matching kernels (compile.kernels.tome_kernels), on the host
and on an emulated rpi5: int8-full's kernels and the matching equal the numpy reference bit for bit, int8's float
softmax is within one level of float64 numpy's, for inputs beyond what a calibrated model gives: constant rows
(zero variance), odd widths, int32 outputs (norm_pre into the residual stream), a row's maximum at its last key,
proportional-attention biases, per-head probability scales of 255 << 0..3, uniform rows, tied similarities; the
float graphs' matching on float keys against PyTorch's ToMe; ToMe's merge (int32 bit for bit, float32 to rounding,
B rows taking several A tokens); square roots through floats and without; and int8-full's GELU (int32 steps, fused
into fc1's write-back in a model) on every input its clamp lets through."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from compile.graph.emitter import Emitter
from compile.graph.integer_numerics import IntegerNumerics
from compile.graph.tome import match_tokens
from compile.kernels.integer_ops import emit_isqrt
from compile.kernels.row_kernels import emit_float_softmax, emit_layer_norm, emit_softmax
from compile.kernels.tome_kernels import emit_merge
from compile.model.tome import bipartite_soft_matching
from compile.quant import integer_params as P
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

FLOAT_SOFTMAXES = {name + "_float": case for name, case in SOFTMAXES.items()}
FLOAT_SCALE = 2.5e-3  # logit scale: the int logits span about +-40 in real units
MATCHINGS = {  # name: (tokens, heads, head dim, r, protected prefix tokens, integer-only square roots)
    "match_deit_tiny": (197, 3, 64, 8, 1, True),
    "match_deit_tiny_float_roots": (197, 3, 64, 8, 1, False),
    "match_odd_ties": (9, 2, 5, 3, 2, True),
}
FLOAT_MATCHINGS = {  # name: (tokens, heads, head dim, r, protected prefix tokens): float keys, as fp32 matches
    "match_float_deit_tiny": (197, 3, 64, 8, 1),
    "match_float_odd_ties": (9, 2, 5, 3, 2),
}
ROOTS = np.unique(np.concatenate([[0, 1, 2, 3, 4], *[[k * k - 1, k * k, k * k + 1] for k in
                                   [2, 3, 1 << 13, 46340, 1 << 20, (1 << 26) - 1]]])).reshape(-1, 1)
MERGES = {  # name: (tokens, heads, head dim, channels, r, protected prefix tokens, dtype)
    "merge_deit_tiny_int32": (197, 3, 64, 192, 8, 1, "int32"),
    "merge_deit_tiny_float32": (197, 3, 64, 192, 8, 1, "float32"),
    "merge_odd_many_into_one": (9, 2, 5, 7, 4, 0, "int32"),
}
GELU_INPUTS = np.arange(-P.GELU_CLAMP, P.GELU_CLAMP + 1, dtype=np.int32)  # Q12, every value fc1's requant gives


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


def _float_softmax_case(rng, heads: int, tokens: int, with_bias: bool):
    logits, _, _, levels, _ = _softmax_case(rng, heads, tokens, False)
    size = rng.integers(1, 9, tokens).astype(np.float32) if with_bias else np.ones(tokens, np.float32)
    z = logits * FLOAT_SCALE + np.log(size.astype(np.float64))
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    expected = np.clip(np.round(p / p.sum(axis=-1, keepdims=True) * levels), 0, 255).astype(np.uint8)
    log2_size = np.log2(size).astype(np.float32) if with_bias else None
    return logits, log2_size, levels, expected


def _matching_case(rng, tokens: int, heads: int, dim: int, r: int, protected: int):
    """(qkv, its keys [heads, N, D], the reference destinations)."""
    qkv = rng.integers(-127, 128, (tokens, 3 * heads * dim)).astype(np.int8)
    qkv[3] = qkv[5]  # two equal keys: tied scores
    keys = qkv[:, heads * dim:2 * heads * dim].reshape(tokens, heads, dim).transpose(1, 0, 2)
    return qkv, keys, integer_reference.tome_destinations(keys, r, protected).astype(np.int32)


def _float_matching_case(rng, tokens: int, heads: int, dim: int, r: int, protected: int):
    """(float qkv, the destinations PyTorch's ToMe gives on its keys averaged over heads)."""
    import torch

    qkv = rng.standard_normal((tokens, 3 * heads * dim)).astype(np.float32)
    qkv[3] = qkv[5]  # two equal keys: tied scores
    keys = torch.from_numpy(qkv[:, heads * dim:2 * heads * dim].reshape(1, tokens, heads, dim)).mean(dim=2)
    merge = bipartite_soft_matching(keys, r, protected)
    return qkv, merge(torch.eye(tokens)[None])[0].argmax(dim=0).numpy().astype(np.int32)


def _merge_case(rng, tokens: int, heads: int, dim: int, channels: int, r: int, protected: int, dtype: str):
    """(x, size, dest, expected merged x with its size as a last column): integer_reference's merge for int32,
    the float64 size-weighted mean for float32."""
    _, keys, dest = _matching_case(rng, tokens, heads, dim, r, protected)
    size = rng.integers(1, 5, (tokens, 1))
    if dtype == "int32":
        x = rng.integers(-(1 << 20), 1 << 20, (tokens, channels))
        merged, merged_size = integer_reference.tome_merge(keys, x, size, r, protected)
    else:
        x = rng.standard_normal((tokens, channels))
        merged_size = integer_reference.tome_sums(keys, size.astype(np.float64), r, protected)
        merged = integer_reference.tome_sums(keys, x * size, r, protected) / merged_size
    return x.astype(dtype), size.astype(dtype), dest, np.concatenate([merged, merged_size], axis=1)


def _function(bb, name: str, args: list[np.ndarray], emit) -> None:
    params = [relax.Var(f"arg{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(args)]
    with bb.function(name, params):
        with bb.dataflow():
            out = bb.emit_output(emit(*params))
        bb.emit_func_output(out)


def _suite(target):
    """A Relax module with one function per case, its inputs and the reference outputs."""
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    em = Emitter(bb, target)
    inputs, expected = {}, {}
    for name, (rows, channels, dtype, (low, high)) in LAYER_NORMS.items():
        x, params, expected[name] = _layer_norm_case(rng, rows, channels, dtype, low, high)
        inputs[name] = [x]
        _function(bb, name, inputs[name], lambda x, params=params, dtype=dtype: emit_layer_norm(em, x, params, dtype))
    for name, (heads, tokens, with_bias) in SOFTMAXES.items():
        logits, bias, exponent, levels, expected[name] = _softmax_case(rng, heads, tokens, with_bias)
        inputs[name] = [logits] if bias is None else [logits, bias]
        _function(bb, name, inputs[name],
                  lambda x, b=None, e=exponent, levels=levels: emit_softmax(em, x, b, e, levels))
    for name, (heads, tokens, with_bias) in FLOAT_SOFTMAXES.items():
        logits, log2_size, levels, expected[name] = _float_softmax_case(rng, heads, tokens, with_bias)
        inputs[name] = [logits] if log2_size is None else [logits, log2_size]
        _function(bb, name, inputs[name], lambda x, s=None, levels=levels: emit_float_softmax(em, x, FLOAT_SCALE, s, levels))
    for name, (tokens, heads, dim, r, protected, integer_only) in MATCHINGS.items():
        qkv, _, expected[name] = _matching_case(rng, tokens, heads, dim, r, protected)
        inputs[name] = [qkv]
        _function(bb, name, inputs[name],
                  lambda x, h=heads, r=r, p=protected, i=integer_only: match_tokens(em, x, h, r, p, i))
    for name, (tokens, heads, dim, r, protected) in FLOAT_MATCHINGS.items():
        qkv, expected[name] = _float_matching_case(rng, tokens, heads, dim, r, protected)
        inputs[name] = [qkv]
        _function(bb, name, inputs[name], lambda x, h=heads, r=r, p=protected: match_tokens(em, x, h, r, p, False))
    for integer_only in (True, False):  # square roots on both sides of perfect squares, up to 2^52
        name = "isqrt" + ("" if integer_only else "_float")
        inputs[name], expected[name] = [ROOTS.astype(np.int64)], integer_reference.isqrt(ROOTS)
        _function(bb, name, inputs[name], lambda x, i=integer_only: emit_isqrt(em, x, i))
    for name, case in MERGES.items():
        x, size, dest, expected[name] = _merge_case(rng, *case)
        inputs[name] = [x, size, dest]
        _function(bb, name, inputs[name], lambda x, size, dest, r=case[4]: em.emit(
            relax.op.concat(emit_merge(em, x, size, dest, r), axis=1)))
    inputs["gelu_every_input"] = [GELU_INPUTS]
    expected["gelu_every_input"] = integer_reference.gelu(GELU_INPUTS.astype(np.int64))
    _function(bb, "gelu_every_input", inputs["gelu_every_input"], IntegerNumerics(em, None, None, None)._gelu)
    return bb.get(), inputs, expected


def _assert_exact(got: dict, expected: dict) -> None:
    """int8-full's kernels bit for bit; the float merge to float32 rounding; the float softmax within one level, and
    exact for all but 1% of values (or one value: a float sum in another order moves a probability that sits on a
    rounding boundary)."""
    assert set(got) == set(expected)
    for name, want in expected.items():
        assert want.min() < want.max(), name  # the case exercises the kernel's range
        if name == "merge_deit_tiny_float32":
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
        elif name in FLOAT_SOFTMAXES:
            off = np.abs(got[name].astype(np.int32) - want)
            assert off.max() <= 1 and (off > 0).sum() <= max(1, off.size // 100), (name, off.max(), (off > 0).sum())
        else:
            np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_row_kernels_equal_the_reference_on_the_host():
    target = load_preset("host").target()
    module, inputs, expected = _suite(target)
    vm = relax.VirtualMachine(cpu_executable(module, target), tvm.cpu())
    got = {name: vm[name](*map(tvm.runtime.tensor, args)).numpy() for name, args in inputs.items()}
    assert {got[name].dtype for name in [*SOFTMAXES, *FLOAT_SOFTMAXES]} == {np.dtype("uint8")}
    _assert_exact(got, expected)


@pytest.mark.slow
def test_row_kernels_equal_the_reference_on_an_emulated_rpi5(tmp_path):
    from tests.emulated_board import emulated_board, run_vm_functions

    module, inputs, expected = _suite(load_preset("rpi5").target())
    library = cross_compiled_library(module, "rpi5", tmp_path / "row_kernels.so")
    _assert_exact(run_vm_functions(emulated_board("cortex-a76"), library, inputs, tmp_path), expected)
