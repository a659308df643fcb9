"""The float16 GEMM format (compile.graph.gemm.Float16Gemm) on rpi5's half-precision arithmetic, on the emulated
Cortex-A76, against numpy's float16; its CUDA build; its refusal on targets without float16 arithmetic.

The reference follows the kernel: x and W rounded to float16, then for k = 0..K-1 in order acc = fl16(acc + x_k w_k)
with one rounding per step (the A76's fmla v.8h is a fused multiply-add), then float32(acc) + bias. numpy's
float16 -> float64 arithmetic is exact for one such step on these inputs (a product of two float16 values has 22
bits, the sum's exponents stay within float64's 53), and float64 -> float16 rounds once, to nearest even, so the
kernel's outputs must be bit-equal; the simulation --quant mixed measures float16 layers with
(compile.quant.format_error.half_accumulated, rounding twice in ties) within two float16 ulps of the largest partial
sum. Independently of the
order, the derived bound holds too:
|acc - x @ W| <= gamma_K * sum_k |x~_k w~_k| + sum_k |x~_k w~_k - x_k w_k|, gamma_K = K u / (1 - K u), u = 2^-11,
x~, w~ the float16-rounded inputs (K fused steps, each with relative error <= u; then the inputs' own rounding).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from tvm import relax

from compile.graph.emitter import Emitter
from compile.graph.gemm import Float16Gemm
from compile.model.vit import Linear
from compile.quant.format_error import half_accumulated
from compile.quant.formats import FLOAT16, INT8, LayerFormats, check_target_formats
from runtime.errors import EdgevitError
from targets import load_preset
from tests.cuda_tools import kernel_sass, needs_cuobjdump, needs_nvcc
from tests.helpers import cross_compiled_library

U = 2.0**-11  # float16's unit roundoff
# (name, M, K, N): a tile-aligned layer, and the K of DeiT-tiny's fc2 and patch embedding (768) with N not a multiple
# of the 16-lane register tile (the padded schedule) and M not a multiple of its 4 rows
CASES = (("aligned", 8, 64, 32), ("deit_k768", 13, 768, 40))


def _layers() -> dict[str, Linear]:
    rng = np.random.default_rng(26)
    return {name: Linear(name, (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32),
                         rng.standard_normal(n).astype(np.float32)) for name, _, k, n in CASES}


def _inputs() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(11)
    return {name: [rng.standard_normal((m, k)).astype(np.float32)] for name, m, k, _ in CASES}


def _module(target, layers: dict[str, Linear]):
    """One Relax function per case: y = Float16Gemm.dense(x) as the graph emits it."""
    bb = relax.BlockBuilder()
    em = Emitter(bb, target)
    gemm = Float16Gemm(em, None)
    for name, m, k, _ in CASES:
        x = relax.Var("x", relax.TensorType((m, k), "float32"))
        with bb.function(name, [x]):
            with bb.dataflow():
                out = bb.emit_output(gemm.dense(x, layers[name]))
            bb.emit_func_output(out)
    return bb.get()


def fused_float16_reference(x: np.ndarray, layer: Linear) -> tuple[np.ndarray, np.ndarray]:
    """(float32(acc) + bias, the largest |acc| on the way), acc accumulated in float16 in k order with one rounding
    per fused multiply-add."""
    xh, wh = x.astype(np.float16).astype(np.float64), layer.weight.astype(np.float16).astype(np.float64)
    acc = np.zeros((x.shape[0], wh.shape[1]), np.float16)
    peak = np.zeros(acc.shape, np.float16)
    for k in range(wh.shape[0]):
        acc = (acc.astype(np.float64) + xh[:, k:k + 1] * wh[k]).astype(np.float16)
        peak = np.maximum(peak, np.abs(acc))
    return acc.astype(np.float32) + layer.bias, peak


def rounding_bound(x: np.ndarray, layer: Linear) -> np.ndarray:
    """The bound on |acc - x @ W| of any order of K fused float16 steps, the inputs' rounding included."""
    x64, w64 = x.astype(np.float64), layer.weight.astype(np.float64)
    xh, wh = x.astype(np.float16).astype(np.float64), layer.weight.astype(np.float16).astype(np.float64)
    k = w64.shape[0]
    products = np.abs(xh[:, :, None] * wh[None])
    inputs = np.abs(xh[:, :, None] * wh[None] - x64[:, :, None] * w64[None]).sum(axis=1)
    return k * U / (1 - k * U) * products.sum(axis=1) + inputs


@pytest.fixture(scope="module")
def rpi5_library(tmp_path_factory) -> Path:
    return cross_compiled_library(_module(load_preset("rpi5").target(), _layers()), "rpi5",
                                  tmp_path_factory.mktemp("float16") / "rpi5.so")


def test_rpi5_kernel_uses_half_precision_vector_fma(rpi5_library):
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.skip("aarch64-linux-gnu-objdump not installed (binutils-aarch64-linux-gnu)")
    listing = subprocess.run([objdump, "-d", str(rpi5_library)], capture_output=True, text=True, check=True).stdout
    half_fma = re.findall(r"\tfmla\s+v\d+\.8h", listing)
    print(f"fmla v.8h: {len(half_fma)}")
    assert half_fma  # asimdhp: eight float16 multiply-adds per instruction
    assert not re.findall(r"\tfmla\s+v\d+\.4s", listing)  # no float32 GEMM beside it


@pytest.mark.slow
def test_rpi5_outputs_bit_equal_numpy_float16_on_emulated_a76(rpi5_library, tmp_path):
    from tests.emulated_board import emulated_board, run_vm_functions

    layers, inputs = _layers(), _inputs()
    outputs = run_vm_functions(emulated_board("cortex-a76"), rpi5_library, inputs, tmp_path)
    for name, _, k, _ in CASES:
        x, layer, got = inputs[name][0], layers[name], outputs[name]
        expected, peak = fused_float16_reference(x, layer)
        np.testing.assert_array_equal(got, expected, err_msg=name)
        simulated = half_accumulated(torch.from_numpy(x).double(), torch.from_numpy(layer.weight).double()).numpy()
        ulp = np.spacing(peak).astype(np.float64)  # a tie rounded the other way: one ulp of a partial sum
        apart = np.abs(got.astype(np.float64) - (simulated.astype(np.float32) + layer.bias))
        print(f"{name}: simulation apart by {(apart > 0).mean():.1%} outputs, at most {(apart / ulp).max():.2f} ulp")
        assert (apart <= 2 * ulp + np.abs(got) * 2.0**-23).all(), name  # what --quant mixed measures float16 by
        exact = x.astype(np.float64) @ layer.weight.astype(np.float64)
        error = np.abs(got.astype(np.float64) - layer.bias - exact)
        bound = rounding_bound(x, layer) + np.abs(got) * 2.0**-24  # + the float32 bias add's rounding
        print(f"{name}: max error {error.max():.3g}, max bound {bound.max():.3g} (K = {k})")
        assert (error <= bound).all(), name


@pytest.mark.parametrize("preset", ["host", "rpi4"])
def test_float16_table_refused_without_half_precision(preset):
    table = LayerFormats((("patch_embed", FLOAT16), ("blocks.0.attention", INT8)))
    with pytest.raises(EdgevitError, match=f"layer patch_embed: format float16 .* target {preset} does not"):
        check_target_formats(table, load_preset(preset))
    check_target_formats(table, load_preset("rpi5"))  # the A76 computes in float16


@needs_nvcc
@needs_cuobjdump
def test_cuda_float16_gemm_builds_with_half_fma(tmp_path):
    """sm_86: the float16 GEMM compiles to half-precision FMA (HFMA2) or tensor-core (HMMA) instructions."""
    from compile.cuda import compile_device_code
    from compile.lowering.cuda import lower_for_cuda

    preset = load_preset("cuda-sm86")
    target = preset.target()
    lowered = lower_for_cuda(_module(target, _layers()), target)
    files = compile_device_code(relax.build(lowered, target=target, relax_pipeline=None), preset)
    sass = ""
    for name, data in files.items():
        (tmp_path / Path(name).name).write_bytes(data)
        sass += "\n".join(kernel_sass(tmp_path / Path(name).name).values())
    assert "HFMA2" in sass or "HMMA" in sass
