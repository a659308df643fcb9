"""Every bundle configuration runs on the board runtime: fp32 / int8 / int8-full x ToMe 0 / 8 x logits / features
of a tiny random-init ViT (96 px, two blocks of width 64: quick compiles, shared through cached_bundle), and w4a8
logits, each bundle run by its own bin/edgevit-run, a process that never loads TVM's compiler library, on the host
and (int8, w4a8, fp32 + ToMe) on an emulated rpi5 with nothing but glibc. Outputs against PyTorch (fp32, with
PyTorch's ToMe), the numpy reference of the integer graph (int8-full, bit for bit), PyTorch's direction (int8) and
the torch simulation of the same int4 weights (w4a8)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle import RUNNER
from tests.helpers import TINY_MODEL as MODEL
from tests.helpers import tiny_bundle, tiny_vit_folder

MODES = ("fp32", "int8", "int8-full")
CASES = [(quant, r, output) for quant in MODES for r in (0, 8) for output in ("logits", "features")] + [("w4a8", 0, "logits")]


@pytest.fixture(scope="module")
def tiny(data) -> Path:
    return tiny_vit_folder()


@pytest.fixture(scope="module")
def images(images_dir) -> list[Path]:
    from compile.data import evaluation_rows

    return [images_dir / name for name, _ in evaluation_rows(3)]


def saved_outputs(argv: list[str], out: Path, run=subprocess.run) -> np.ndarray:
    """The outputs `edgevit-run run ... --save out` wrote, [images, D]."""
    result = run([*argv, "--save", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out)


def reference_model(tiny: Path, output: str):
    """The model compile loads from the folder, and its preprocessing spec."""
    from compile.model.checkpoint import read_checkpoint
    from compile.model.models import build_model, model_spec

    checkpoint = read_checkpoint(tiny)
    spec = model_spec(MODEL, **{**checkpoint.preprocessing, "image_size": 96})
    return build_model(spec, checkpoint, output=output), spec


def torch_outputs(tiny: Path, r: int, output: str, images: list[Path]) -> np.ndarray:
    """PyTorch's outputs (with PyTorch's ToMe at r) on the images, preprocessed as the runtime does."""
    import torch

    from compile.model.tome_patch import apply_tome

    model, spec = reference_model(tiny, output)
    if r:
        apply_tome(model, [r] * len(model.blocks))
    batch = np.stack([spec.preprocess().load(image) for image in images])
    with torch.inference_mode():
        return model(torch.from_numpy(batch)).numpy()


def integer_reference_outputs(tiny: Path, r: int, output: str, images: list[Path]) -> np.ndarray:
    """The numpy reference of the int8-full graph, quantized as compile quantizes (same calibration images)."""
    from compile.model.vit import describe
    from compile.quant.config import QuantConfig
    from compile.quant.quantize import quantize
    from tests import integer_reference

    model, spec = reference_model(tiny, output)
    vit = describe(model, [r] * len(model.blocks), spec.mean, spec.std)
    qvit, _ = quantize(model, vit, spec, QuantConfig(mode="int8-full", calib_count=8), log=lambda _: None)
    return np.concatenate([integer_reference.run(qvit, spec.preprocess("uint8").load(image)[None]) for image in images])


def simulated_outputs(tiny: Path, images: list[Path]) -> np.ndarray:
    """The torch simulation (compile.quant.simulate) of the w4a8 model compile makes: its int4 weights dequantized,
    its int8 activations fake-quantized, quantized as compile quantizes (same calibration images)."""
    import torch

    from compile.model.vit import describe
    from compile.quant.config import QuantConfig
    from compile.quant.quantize import quantize
    from compile.quant.simulate import simulated_model

    model, spec = reference_model(tiny, "logits")
    vit = describe(model, [0] * len(model.blocks), spec.mean, spec.std)
    qvit, formats = quantize(model, vit, spec, QuantConfig(mode="w4a8", calib_count=8), log=lambda _: None)
    batch = np.stack([spec.preprocess().load(image) for image in images])
    with torch.inference_mode():
        return simulated_model(model, qvit, formats)(torch.from_numpy(batch)).numpy()


def assert_matches(quant: str, got: np.ndarray, tiny: Path, r: int, output: str, images: list[Path]) -> None:
    if quant == "int8-full":
        np.testing.assert_array_equal(got, integer_reference_outputs(tiny, r, output, images))
        return
    expected = torch_outputs(tiny, r, output, images)
    if quant == "w4a8":  # the same int4 weights: far closer to the simulation than the float model is to it
        simulated = simulated_outputs(tiny, images)
        assert np.abs(got - simulated).max() <= 0.05 * np.abs(expected - simulated).max()
        return
    if quant == "fp32":
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
    else:  # int8 (a random tiny model calibrated on 8 images): each output points where PyTorch's does
        cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosine.min() >= 0.95, cosine


@pytest.mark.parametrize("quant, r, output", CASES)
def test_host_bundle_runs_natively_and_matches_its_reference(tiny, images, quant, r, output, tmp_path):
    path = tiny_bundle(quant, r, output)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["tome"]["schedule"] == [r, r] and manifest["model"]["output"] == output
    assert manifest["input"]["dtype"] == ("float32" if quant == "fp32" else "uint8")
    got = saved_outputs([str(path / RUNNER), "run", str(path), *map(str, images)], tmp_path / "out.npy")
    assert got.shape == (len(images), 64 if output == "features" else 10)
    assert_matches(quant, got, tiny, r, output, images)


def test_fp32_tome_bundle_maps_no_compiler_library(tiny):
    """The emitted graph (--dump-ir's first phase) merges with the ToMe kernels and sorts nothing, and the runner's
    process maps TVM's runtime library only (bench --json reads /proc/self/maps): nothing of the fp32 + ToMe graph
    needs libtvm_compiler (main's exported ToMe called its sort)."""
    from tests.helpers import bundle_ir

    path = tiny_bundle("fp32", 8, "logits")
    graph = (bundle_ir(path) / "01_graph.py").read_text()
    assert "tome_destinations" in graph and "tome_merge" in graph
    assert not any(op in graph for op in ("sort", "topk", "scatter")), "static-shape kernels only"
    result = subprocess.run([path / RUNNER, "--json", "bench", path, "--warmup", "0", "--repeat", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    libraries = json.loads(result.stdout.splitlines()[-1])["tvm_libraries"]
    assert any("libtvm_runtime" in name for name in libraries)
    assert not any("libtvm_compiler" in name or "libtvm.so" in name for name in libraries), libraries


@pytest.fixture(scope="module")
def rpi5_board(tmp_path_factory):
    from tests.emulated_board import bare_board

    return bare_board("cortex-a76", tmp_path_factory.mktemp("bare-sysroot"))


@pytest.mark.slow
@pytest.mark.parametrize("quant, r", [("int8", 0), ("w4a8", 0), ("fp32", 8)])
def test_rpi5_bundle_on_an_emulated_board_matches(tiny, images, rpi5_board, quant, r, tmp_path):
    """The rpi5 bundle's own runner under qemu (Cortex-A76): fp32 + ToMe against PyTorch's ToMe, int8 and w4a8 against
    the host's bundle of the same mode (the GEMMs are exact; float softmax / LayerNorm round differently per ISA)."""
    path = tiny_bundle(quant, r, "logits", target="rpi5")
    argv = rpi5_board.host_program_argv(path / RUNNER, ["run", str(path), *map(str, images)])
    got = saved_outputs(argv, tmp_path / "board.npy", run=lambda argv, **kw: rpi5_board.run(argv, timeout_s=1200))
    if quant == "fp32":
        assert_matches(quant, got, tiny, r, "logits", images)
        return
    host = tiny_bundle(quant, r, "logits")
    expected = saved_outputs([str(host / RUNNER), "run", str(host), *map(str, images)], tmp_path / "host.npy")
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).all()
