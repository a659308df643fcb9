"""CUDA presets: kernels are compiled by nvcc at build time and served to TVM from the bundle."""

import hashlib
import os
import re

import pytest

from compile.cuda import DEVICE_DIR, FATBIN_MAGIC
from tests.cuda_tools import bundle_fatbins, count_launches, cuobjdump, kernel_sass, needs_cuobjdump, needs_nvcc
from tests.helpers import assert_one_line_error, bundle_ir, cached_bundle, run_module


@pytest.fixture(scope="module")
def small_sm86_bundle(data):
    """fp32 DeiT-tiny at 64 px (17 tokens: a quick build) for the desktop-GPU preset cuda-sm86."""
    return cached_bundle("deit_tiny64-cuda-sm86-fp32", "--target", "cuda-sm86", "--image-size", "64", dump_ir=True)


@needs_nvcc
def test_small_module_kernels_are_precompiled_for_sm87(tmp_path):
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    from compile.cuda import _cuda_modules, compile_device_code
    from targets import load_preset

    @tvm.script.ir_module
    class Small:
        @R.function
        def main(x: R.Tensor((64, 32), "float32"), w: R.Tensor((32, 16), "float32")):
            with R.dataflow():
                y = R.nn.relu(R.matmul(x, w))
                R.output(y)
            return y

    preset = load_preset("jetson")
    executable = relax.build(Small, target=preset.target())
    files = compile_device_code(executable, preset)
    sources = [str(m.inspect_source("")) for m in _cuda_modules(executable.mod)]
    assert len(files) == len(sources) >= 1
    for name, data in files.items():
        assert data[:4] == FATBIN_MAGIC
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    for source in sources:  # the file the core serves when TVM asks for this module's binary (sha256 of its source)
        assert f"{DEVICE_DIR}/{hashlib.sha256(source.encode()).hexdigest()}.fatbin" in files


@needs_nvcc
@pytest.mark.slow
def test_jetson_bundle_carries_fatbins(data):
    bundle = cached_bundle("deit_tiny-jetson-fp32", "--target", "jetson")
    from runtime.bundle import verified_manifest

    manifest = verified_manifest(bundle)
    kernels = [name for name in manifest.files if name.startswith("device/")]
    assert kernels and all((bundle / name).read_bytes()[:4] == FATBIN_MAGIC for name in kernels)
    assert manifest.target.tvm_target["arch"] == "sm_87" and manifest.target.device == "cuda"


@needs_nvcc
def test_desktop_gpu_preset_builds(small_sm86_bundle):
    from runtime.bundle import verified_manifest

    manifest = verified_manifest(small_sm86_bundle)
    assert manifest.target.preset == "cuda-sm86" and manifest.target.arch == "x86_64"
    fatbins = bundle_fatbins(small_sm86_bundle)
    assert fatbins and all(path.read_bytes()[:4] == FATBIN_MAGIC for path in fatbins)


@needs_nvcc
@needs_cuobjdump
def test_desktop_gpu_fatbin_holds_sm86_code(small_sm86_bundle):
    for path in bundle_fatbins(small_sm86_bundle):
        assert "sm_86" in cuobjdump("-lelf", path)


@needs_nvcc
def test_inference_is_one_cuda_graph(small_sm86_bundle):
    """Every kernel but the first (it reads the caller's input) and the last (it writes the returned tensor)
    is replayed from one captured graph: 3 launches per image instead of one per kernel."""
    import tvm


    assert b"vm.builtin.cuda_graph.run_or_capture" in (small_sm86_bundle / "model.so").read_bytes()
    count = count_launches(tvm.ir.load_json((bundle_ir(small_sm86_bundle) / "02_lowered.json").read_text()))
    print(f"kernels per image: {count.kernels}; launches with the CUDA graph: {count.launches}")
    assert count.graphs == 1 and count.kernels - count.graph_kernels <= 2
    assert count.kernels >= 12 * 10  # 12 blocks of about a dozen kernels each


# DeiT-tiny's int8 GEMMs as (M, K, N): patch embedding, qkv, q @ k^T (per head), proj, fc1, fc2
DEIT_TINY_GEMMS = {(196, 768, 192), (197, 192, 576), (197, 64, 197), (197, 192, 192), (197, 192, 768), (197, 768, 192)}


def _int8_operands(signature: str) -> list[tuple[int, ...]]:
    """Shapes of the int8 parameters in a TIR function's signature, in order."""
    buffers = re.findall(r'T\.Buffer\(\((.*?)\), "(\w+)"\)', signature)
    return [tuple(int(v) for v in re.findall(r"\d+", shape.replace("int64", ""))) for shape, dtype in buffers
            if dtype == "int8"]


@needs_nvcc
@needs_cuobjdump
@pytest.mark.slow
def test_jetson_int8_gemms_run_on_tensor_cores(data):
    """sm_87 int8 DeiT-tiny: every large GEMM is an int8 x int8 -> int32 wmma kernel (IMMA in its SASS, its
    requantize / bias / GELU epilogue fused in); the small ones (head, p @ v with 64 columns) keep dp4a."""
    import tvm

    bundle = cached_bundle("deit_tiny-jetson-int8", "--target", "jetson", "--quant", "int8", dump_ir=True)
    lowered = tvm.ir.load_json((bundle_ir(bundle) / "02_lowered.json").read_text())
    tensor_core = {}
    for gv, func in lowered.functions.items():
        script = func.script() if isinstance(func, tvm.tirx.PrimFunc) else ""
        if "T.tvm_mma_sync" in script:
            assert '"int8", scope="wmma.matrix_a"' in script and '"int8", scope="wmma.matrix_b"' in script
            assert '"int32", scope="wmma.accumulator"' in script
            a, b = _int8_operands(next(line for line in script.splitlines() if line.startswith("def ")))[:2]
            assert a[-1] == b[-2], (gv.name_hint, a, b)
            tensor_core[gv.name_hint] = (a[-2], a[-1], b[-1])
    assert set(tensor_core.values()) == DEIT_TINY_GEMMS
    sass = {name: code for path in bundle_fatbins(bundle) for name, code in kernel_sass(path).items()}
    imma = {name: code.count("IMMA") for name, code in sass.items() if "IMMA" in code}
    dp4a = sum(code.count("IDP.4A") for code in sass.values())
    print(f"{sum(imma.values())} IMMA in {len(imma)} of {len(sass)} kernels; {dp4a} dp4a (IDP.4A) left")
    assert set(imma) == {f"{name}_kernel" for name in tensor_core}


def test_missing_nvcc_is_one_clear_error():
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(p, "nvcc")))
    assert_one_line_error(run_module("compile", "--target", "jetson", env={"PATH": path}), "needs nvcc")


@needs_nvcc
def test_xavier_needs_an_nvcc_with_sm72():
    import subprocess

    if "compute_72" in subprocess.run(["nvcc", "--list-gpu-arch"], capture_output=True, text=True).stdout:
        pytest.skip("this nvcc still supports sm_72")
    assert_one_line_error(run_module("compile", "--target", "jetson-xavier"), "sm_72")
