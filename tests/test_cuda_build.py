"""CUDA presets: kernels are compiled by nvcc at build time and served to TVM from the bundle."""

import hashlib
import os
import shutil

import pytest

from runtime.cuda_kernels import FATBIN_MAGIC, fatbin_for
from tests.helpers import assert_one_line_error, cached_bundle, run_module

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed")


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
    for source in sources:  # what the runtime returns when TVM asks for this module's binary
        assert fatbin_for(tmp_path, source) == files[f"device/{hashlib.sha256(source.encode()).hexdigest()}.fatbin"]


@needs_nvcc
@pytest.mark.slow
def test_jetson_bundle_carries_fatbins(data):
    bundle = cached_bundle("deit_tiny-jetson-fp32", "--target", "jetson")
    from runtime.bundle import read_manifest, verify_files

    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    kernels = [name for name in manifest.files if name.startswith("device/")]
    assert kernels and all((bundle / name).read_bytes()[:4] == FATBIN_MAGIC for name in kernels)
    assert manifest.target.tvm_target["arch"] == "sm_87" and manifest.target.device == "cuda"


def test_missing_nvcc_is_one_clear_error():
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(p, "nvcc")))
    assert_one_line_error(run_module("compile", "--target", "jetson", env={"PATH": path}), "needs nvcc")


@needs_nvcc
def test_xavier_needs_an_nvcc_with_sm72():
    import subprocess

    if "compute_72" in subprocess.run(["nvcc", "--list-gpu-arch"], capture_output=True, text=True).stdout:
        pytest.skip("this nvcc still supports sm_72")
    assert_one_line_error(run_module("compile", "--target", "jetson-xavier"), "sm_72")
