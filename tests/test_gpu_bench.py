"""`results bench --device cuda`, the parts that run without a GPU: the graphs TensorRT is built from (checked
with ONNX Runtime on the CPU against the timm model on real images), the refusal on a machine without a GPU,
GPU facts without nvidia-smi, and the GPU table. The run on a GPU is in test_gpu.py."""

from __future__ import annotations

import numpy as np
import pytest

from results.peers.cuda_device import FACT_KEYS, cuda_problem, gpu_facts, parse_nvidia_smi
from results.peers.table import markdown_table
from tests.helpers import assert_one_line_error, run_module

N_IMAGES = 12


@pytest.fixture(scope="module")
def peer_context(data, tmp_path_factory):
    """Real DeiT-tiny, calibrated on the first 8 calibration images (what `--calib-images 8` picks)."""
    from results.peers.prepare import PeerContext

    return PeerContext("deit_tiny_patch16_224", tmp_path_factory.mktemp("peers"), calib_count=8)


@pytest.fixture(scope="module")
def eval_batch(peer_context, images_dir):
    """The first evaluation images [n, 3, H, W] float32 and the timm model's own logits on them."""
    from compile.data import evaluation_rows
    from results.peers.inputs import model_preprocess
    from tests.reference import load_batch, torch_logits

    batch = load_batch(model_preprocess(peer_context.model_name), images_dir,
                       [name for name, _ in evaluation_rows(N_IMAGES)])
    return batch, torch_logits(peer_context.model, batch)


def _ort_logits(path, batch: np.ndarray, dtype=np.float32) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": x[None].astype(dtype)})[0].astype(np.float32) for x in batch])


def test_tensorrt_int8_graph_is_explicit_quantization_and_keeps_top1(peer_context, eval_batch):
    """The QDQ graph follows TensorRT's rules (int8 symmetric Q/DQ, per-channel weights on the output axis, float
    biases, every MatMul quantized) and, run by ONNX Runtime on the CPU, keeps the timm model's top-1."""
    import onnx
    from onnx import numpy_helper

    from results.peers.prepare import tensorrt_int8_graph

    path = tensorrt_int8_graph(peer_context)
    graph = onnx.load(str(path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert dequantize and any(n.op_type == "QuantizeLinear" for n in graph.node)
    weights = 0
    for node in dequantize:
        zero_point = constants[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name  # symmetric int8, no int32 bias
        if node.input[0] in constants:  # a weight: one scale per output channel (MatMul B [K, N]: axis 1)
            scale, weight = constants[node.input[1]], constants[node.input[0]]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            assert scale.size == weight.shape[axis] > 1, node.name
            weights += 1
    assert weights == 2 + 4 * len(peer_context.model.blocks)  # patch embedding, head, qkv / proj / fc1 / fc2
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    produced_by = {out: n.op_type for n in graph.node for out in n.output}
    assert all(produced_by.get(i) == "DequantizeLinear" or i in constants for n in matmuls for i in n.input)

    batch, reference = eval_batch
    fp32 = _ort_logits(peer_context.onnx(False), batch)
    assert np.abs(fp32 - reference).max() < 1e-3
    int8 = _ort_logits(path, batch)
    agreement = (int8.argmax(1) == reference.argmax(1)).mean()
    assert agreement >= (N_IMAGES - 2) / N_IMAGES, agreement


def test_tensorrt_fp16_graph_is_half_precision_and_keeps_top1(peer_context, eval_batch):
    import onnx

    path = peer_context.onnx(False, half=True)
    graph = onnx.load(str(path)).graph
    half = onnx.TensorProto.FLOAT16
    assert graph.input[0].type.tensor_type.elem_type == half and graph.output[0].type.tensor_type.elem_type == half
    assert all(t.data_type != onnx.TensorProto.FLOAT for t in graph.initializer)
    batch, reference = eval_batch
    logits = _ort_logits(path, batch, np.float16)
    assert (logits.argmax(1) == reference.argmax(1)).sum() >= N_IMAGES - 1  # a near-tie may flip
    assert str(peer_context.model.patch_embed.proj.weight.dtype) == "torch.float32"  # the shared model stays FP32


@pytest.mark.skipif(cuda_problem() is None, reason="a CUDA device is present: the benchmark runs (test_gpu.py)")
def test_device_cuda_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    out, build = tmp_path / "out", tmp_path / "build"
    result = run_module("results", "bench", "--device", "cuda", "--edgevit", "int8", "--out", out, "--build-dir", build)
    assert result.returncode == 2
    assert_one_line_error(result, "no CUDA device: ")
    assert not out.exists() and not build.exists()


def test_bench_refuses_a_target_or_peer_of_the_other_device():
    assert_one_line_error(run_module("results", "bench", "--edgevit", "int8", "--target", "cuda-sm90"),
                          "--target cuda-sm90 builds for cuda, not --device cpu")
    assert_one_line_error(run_module("results", "bench", "--peers", "tensorrt-int8"),
                          "unknown peer 'tensorrt-int8' for --device cpu")
    assert_one_line_error(run_module("results", "bench", "--device", "cuda", "--peers", "onnxruntime-int8-static"),
                          "unknown peer 'onnxruntime-int8-static' for --device cuda")


def test_gpu_facts_without_nvidia_smi(monkeypatch):
    """Every fact key is there; without nvidia-smi the facts come from PyTorch / TVM, or are None without a GPU."""
    from results.peers import cuda_device

    monkeypatch.setattr(cuda_device.shutil, "which", lambda name: None)
    facts = gpu_facts()
    assert set(facts) == set(FACT_KEYS) and "nvidia-smi" not in facts["facts_from"]
    if cuda_problem() is None:
        assert facts["gpu"] and facts["compute_capability"].count(".") == 1, facts
    else:
        assert facts["facts_from"] == "none" and facts["gpu"] is None and facts["compute_capability"] is None, facts


def test_nvidia_smi_line_and_default_target():
    from results.peers.cuda_device import default_cuda_target

    facts = parse_nvidia_smi("NVIDIA H200, 9.0, 570.86.15, 1980, 1980, 2619, 2619, 143771, [N/A]")
    assert facts["gpu"] == "NVIDIA H200" and facts["compute_capability"] == "9.0"
    assert facts["max_sm_clock_mhz"] == 1980.0 and facts["power_limit_w"] is None
    assert default_cuda_target("9.0") == "cuda-sm90" and default_cuda_target("8.6") == "cuda-sm86"
    assert default_cuda_target(None) == default_cuda_target("7.5") == "cuda-sm80"


def test_gpu_table_names_the_gpu_and_its_baselines():
    from results.peers.suite import _with_speedups

    facts = dict.fromkeys(FACT_KEYS) | {"gpu": "NVIDIA H200", "compute_capability": "9.0", "facts_from": "torch"}
    common = {"model": "m", "device": "cuda", "threads": 2, "spin_wait": True, "cpu": "cpu", "machine": "x86_64",
              "time_utc": "t", "n_images": 3, "split": "rows 257..", "gpu_facts": facts, "edgevit_target": "cuda-sm90"}

    def ok(name: str, runtime: str, median_ms: float) -> dict:
        return {"contender": name, "status": "ok", "runtime": runtime, "recipe": {}, "median_ms": median_ms,
                "p90_ms": median_ms, "top1": 0.5, "top5": 1.0, **common}

    records = _with_speedups([ok("onnxruntime-cuda-fp32", "onnxruntime", 4.0), ok("tensorrt-fp16", "tensorrt", 1.0),
                              ok("tensorrt-int8", "tensorrt", 0.8), ok("edgevit-int8", "edgevit", 2.0),
                              {"contender": "pytorch-cuda-fp16", "status": "unavailable", "reason": "r", **common}])
    assert records[3]["speedup_vs_ort_cuda_fp32"] == 2.0 and records[3]["speedup_vs_best_tensorrt"] == 0.4
    assert records[3]["best_tensorrt"] == "tensorrt-int8"
    table = markdown_table(records)
    assert "NVIDIA H200 (compute capability 9.0" in table and "edgevit bundles for cuda-sm90" in table
    assert "| vs ONNX Runtime CUDA FP32 | vs best TensorRT (tensorrt-int8) |" in table
    assert "| edgevit-int8 | 2.00 | 2.00 | 2.00x | 0.40x |" in table
    assert "| pytorch-cuda-fp16 | not available: r | | | | |" in table


def test_cuda_peers_without_their_packages_say_what_to_install(tmp_path):
    """Here (CPU torch, CPU onnxruntime, no tensorrt) every cuda peer is a row naming what it lacks, not a crash."""
    import importlib.util

    import onnxruntime
    import torch

    from results.peers.prepare import CUDA_PEERS, PeerContext, Unavailable, prepare_peer

    if torch.cuda.is_available() or importlib.util.find_spec("tensorrt") is not None \
            or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("a CUDA build of torch, tensorrt or onnxruntime-gpu is installed here")
    ctx = PeerContext("deit_tiny_patch16_224", tmp_path, calib_count=8)
    got = {name: prepare_peer(name, ctx) for name in CUDA_PEERS}
    assert all(isinstance(u, Unavailable) for u in got.values()), got
    assert got["pytorch-cuda-fp16"].reason.startswith(f"torch {torch.__version__} sees no CUDA device")
    assert got["onnxruntime-cuda-fp32"].reason.endswith(
        "has no CUDAExecutionProvider (pip install -e '.[gpu]' && pip install --force-reinstall --no-deps "
        "onnxruntime-gpu==1.31.1)")
    assert got["tensorrt-int8"].reason == "tensorrt is not installed (pip install -e '.[gpu]')"
    assert not list(tmp_path.iterdir())  # nothing exported for a peer that cannot run
