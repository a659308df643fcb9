"""CUDA bundles on a real GPU: they load from their shipped fatbins and compute what the host bundles and
PyTorch compute. Skipped, with the reason, where no CUDA device is present (the CPU-only CI machines); the
device code is checked without a GPU in test_cuda_build.py and test_int8_kernels.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from compile.data import evaluation_rows
from runtime.errors import EdgevitError
from tests.cuda_tools import needs_nvcc
from tests.helpers import cached_bundle
from tests.reference import load_batch, torch_logits


def _gpu_skip_reason() -> str | None:
    """Why the GPU tests cannot run here, None when a CUDA device is present (TVM loads its CUDA runtime,
    libtvm_runtime_cuda.so, at import where libcuda.so.1 is found)."""
    import tvm

    if not tvm.cuda(0).exist:
        return "no CUDA device (tvm.cuda(0) does not exist: no GPU, or no driver / libcuda.so.1)"
    return None


def _preset_for_this_gpu() -> str | None:
    """The target preset for the GPU at hand: a Jetson (sm_87 + aarch64) or a cuda-sm<NN> preset on x86-64."""
    import tvm

    from targets import list_presets
    from targets.cpu_features import machine_arch

    arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    for preset in list_presets():
        if preset.device == "cuda" and preset.tvm_target["arch"] == arch and preset.arch == machine_arch():
            return preset.name
    return None


NO_GPU = _gpu_skip_reason()
pytestmark = [needs_nvcc, pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))]


@pytest.fixture(scope="module")
def gpu_preset() -> str:
    name = _preset_for_this_gpu()
    if name is None:
        import tvm

        pytest.skip(f"no target preset for this GPU (compute capability {tvm.cuda(0).compute_version})")
    return name


def _gpu_bundle(preset: str, quant: str) -> Path:
    return cached_bundle(f"deit_tiny-{preset}-{quant}", "--target", preset, "--quant", quant)


def _logits(bundle: Path, images: Path, names: list[str]) -> np.ndarray:
    from tests.helpers import bundle_outputs

    return bundle_outputs(bundle, images, names)


def _names(limit: int | None = None) -> list[str]:
    return [name for name, _ in evaluation_rows(limit)]


def test_bundle_loads_its_shipped_kernels(gpu_preset, images_dir, tmp_path):
    """A bundle runs from its shipped fatbins; one missing a fatbin is refused."""
    bundle = _gpu_bundle(gpu_preset, "fp32")
    assert np.isfinite(_logits(bundle, images_dir, _names(1))).all()
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    next((copy / "device").glob("*.fatbin")).unlink()
    with pytest.raises((EdgevitError, RuntimeError)):
        _logits(copy, images_dir, _names(1))


def test_fp32_matches_pytorch(gpu_preset, images_dir):
    from compile.model.models import load_model
    from tests.helpers import bundle_preprocess

    bundle = _gpu_bundle(gpu_preset, "fp32")
    names = _names(16)
    expected = torch_logits(load_model("deit_tiny_patch16_224"),
                            load_batch(bundle_preprocess(bundle), images_dir, names))
    assert np.abs(_logits(bundle, images_dir, names) - expected).max() <= 1e-3


def test_int8_agrees_with_the_host_int8_bundle(gpu_preset, int8_bundle, images_dir):
    """Same integer GEMMs (tensor cores / dp4a vs the CPU's dot instructions), float nonlinearities."""
    names = _names()
    gpu = _logits(_gpu_bundle(gpu_preset, "int8"), images_dir, names)
    host = _logits(int8_bundle, images_dir, names)
    agreement = float((gpu.argmax(1) == host.argmax(1)).mean())
    print(f"int8 top-1 agreement GPU vs host: {agreement:.4f} over {len(names)} images")
    assert agreement >= 0.99


def test_int8_full_equals_the_host_bundle_bit_for_bit(gpu_preset, int8_full_bundle, images_dir):
    """Integer only: the GPU's logits equal the host bundle's exactly (test_quant checks those against numpy)."""
    names = _names(32)
    gpu = _logits(_gpu_bundle(gpu_preset, "int8-full"), images_dir, names)
    assert np.array_equal(gpu, _logits(int8_full_bundle, images_dir, names))


def _missing_package(peer: str) -> str | None:
    """What the unavailable row of a cuda peer says when its packages are not installed here; None when they are."""
    import importlib.util

    import onnxruntime
    import torch

    if peer.startswith("tensorrt") and importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install -e '.[gpu]')"
    if peer == "onnxruntime-cuda-fp32" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "has no CUDAExecutionProvider"
    if peer.startswith(("pytorch", "tensorrt")) and not torch.cuda.is_available():
        return "sees no CUDA device"
    return None


def test_bench_device_cuda_end_to_end(gpu_preset, images_dir, tmp_path):
    """A short `results bench --device cuda`: edgevit fp32 / int8 / int8-full / int8 with ToMe against every cuda
    peer, interleaved; the table and JSONL name the GPU, and every contender whose packages are installed runs and
    scores as the timm model does on the same images (a peer without its package is a row saying what to install)."""
    from results.peers.prepare import CUDA_PEERS
    from results.records import read_jsonl
    from tests.helpers import run_module
    from tests.reference import timm_top1

    n_images = 20
    bundles = [_gpu_bundle(gpu_preset, quant) for quant in ("fp32", "int8", "int8-full")]
    bundles.append(cached_bundle(f"deit_tiny-{gpu_preset}-int8-tome8", "--target", gpu_preset, "--quant", "int8",
                                 "--tome-r", "8"))
    out = tmp_path / "out"
    result = run_module("results", "bench", "--device", "cuda", *bundles, "--limit", n_images, "--rounds", 2,
                        "--calib-images", 16, "--memory-runs", 2, "--build-dir", tmp_path / "build", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out / "bench.md")
    records = read_jsonl(out / "bench.jsonl")
    main_rows = [r for r in records if not r["contender"].endswith("-native")]  # native rows: not verified on a GPU
    assert [r["contender"] for r in main_rows] == [*CUDA_PEERS, "edgevit-fp32", "edgevit-int8", "edgevit-int8-full",
                                                   "edgevit-int8-tome8"]
    reference = timm_top1(images_dir, n_images)
    facts = records[0]["gpu_facts"]
    assert facts["gpu"] and facts["compute_capability"], facts
    for r in main_rows:
        assert r["device"] == "cuda" and r["edgevit_target"] == gpu_preset and r["gpu_facts"] == facts, r
        missing = _missing_package(r["contender"])
        if missing is not None:
            assert r["status"] == "unavailable" and missing in r["reason"], r
            continue
        assert r["status"] == "ok", r
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["n"] == 10, r
        quantized = "int8" in r["contender"]
        assert abs(r["top1"] - reference) <= (3 if quantized else 1) / n_images, (r["contender"], r["top1"], reference)
    table = (out / "bench.md").read_text()
    assert facts["gpu"] in table and all(f"| {r['contender']} |" in table for r in records)
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
