"""Loading a prepared contender (an artifact on disk) into a batch-1 callable: numpy in, logits out.

Preparing (export, quantization, compilation) is heavy and happens once (results.peers.prepare, compile);
loading needs only the contender's own runtime, so the peak-memory probe (results.peers.peak_memory)
loads the same artifact in a fresh interpreter and measures what a deployment would hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from runtime.preprocess import Preprocess


@dataclass(frozen=True)
class Artifact:
    """A contender ready to load: what runs it (`kind`) on which device, its file, the model and how it was made."""

    name: str
    kind: str  # pytorch | onnxruntime | executorch | litert | tensorrt | edgevit
    path: Path  # weights (pytorch), .onnx, .pte, .tflite, a TensorRT plan, or a bundle directory
    model: str
    recipe: dict = field(default_factory=dict, hash=False)
    device: str = "cpu"  # cpu | cuda (GPU 0)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "path": str(self.path)})

    @classmethod
    def from_json(cls, text: str) -> Artifact:
        fields = json.loads(text)
        return cls(**{**fields, "path": Path(fields["path"])})


@dataclass(frozen=True)
class Runner:
    """A loaded contender: `run` maps a batch [1, 3, H, W] of `preprocess.dtype` to logits [1, classes]."""

    run: Callable[[np.ndarray], np.ndarray]
    preprocess: Preprocess

    def example(self) -> np.ndarray:
        """A fixed pseudo-random input of the right shape and dtype (pixels for uint8), for timing."""
        from runtime.manifest import InputSpec

        p = self.preprocess
        return InputSpec(shape=[1, 3, p.size, p.size], dtype=p.dtype, layout="NCHW", mean=list(p.mean), std=list(p.std),
                         resize=p.resize, crop_pct=p.size / p.resize, interpolation=p.interpolation).example()


def load_runner(artifact: Artifact, threads: int, spin_wait: bool, preprocess: Preprocess | None = None) -> Runner:
    """Load `artifact` with `threads` intra-op threads.

    TVM and PyTorch read their thread count and spin policy from the environment, set by the caller
    before they start (TVM_NUM_THREADS, TVM_THREAD_POOL_SPIN_COUNT, OMP_WAIT_POLICY); ONNX Runtime
    takes `spin_wait` as a session option. XNNPACK's pool (ExecuTorch, LiteRT) has no such setting.
    """
    if artifact.kind == "edgevit":
        return _edgevit(artifact.path, threads)
    from results.peers.inputs import model_preprocess

    load = {"pytorch": _pytorch, "onnxruntime": partial(_onnxruntime, spin_wait=spin_wait), "executorch": _executorch,
            "litert": _litert, "tensorrt": _tensorrt}
    return Runner(load[artifact.kind](artifact, threads), preprocess or model_preprocess(artifact.model))


def _pytorch(artifact: Artifact, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch eager under inference_mode (OMP_WAIT_POLICY, set by the caller, decides if its pool spins); on cuda
    in the recipe's precision (fp32 | fp16), the input copied to the GPU and the logits back in every call."""
    import torch

    from compile.model.models import load_model

    torch.set_num_threads(threads)
    model = load_model(artifact.model, artifact.path)
    if artifact.device == "cpu":
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return run
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[artifact.recipe["precision"]]
    model = model.to("cuda", dtype)

    def run_cuda(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():  # .cpu() copies to pageable memory: it returns once the GPU is done
            return model(torch.from_numpy(x).to("cuda", dtype)).float().cpu().numpy()

    return run_cuda


def _onnxruntime(artifact: Artifact, threads: int, spin_wait: bool) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime, all graph optimizations (Q/DQ fused into integer kernels), on the CPU execution provider or
    (cuda) the CUDA one, which copies the input in and the logits out in every call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # contenders take turns in one process: a pool that keeps spinning after its run steals the
    # cores of the next one, so unless asked for, every pool here sleeps when idle
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if artifact.device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(artifact.path), options, providers=providers)
    if session.get_providers()[0] != providers[0]:  # ORT falls back to the CPU when the CUDA provider cannot load
        raise RuntimeError(f"ONNX Runtime could not start {providers[0]} (session providers: {session.get_providers()})")
    return lambda x: session.run(None, {"x": x})[0]


def _executorch(artifact: Artifact, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """An ExecuTorch program (XNNPACK delegate) through its Python runtime bindings."""
    import torch
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    if _threadpool_get_thread_count() != threads:  # the process-wide pool XNNPACK runs on; resetting it
        _unsafe_reset_threadpool(threads)  # once a program has run crashes, so only when it must change
    method = Runtime.get().load_program(artifact.path).load_method("forward")
    return lambda x: method.execute([torch.from_numpy(x)])[0].numpy()


def _litert(artifact: Artifact, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A LiteRT flatbuffer in its interpreter (XNNPACK delegate); int8 I/O is (de)quantized here, timed."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact.path), num_threads=threads)
    runner = interpreter.get_signature_runner()
    (name, inp), = runner.get_input_details().items()
    (out,) = runner.get_output_details().values()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    def run(x: np.ndarray) -> np.ndarray:
        if inp["dtype"] == np.int8:
            x = np.clip(np.round(x / in_scale) + in_zero, -128, 127).astype(np.int8)
        (y,) = runner(**{name: x}).values()
        return (y.astype(np.float32) - out_zero) * out_scale if out["dtype"] == np.int8 else y

    return run


def _tensorrt(artifact: Artifact, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A serialized TensorRT engine (results.peers.tensorrt_engine); `threads` does not apply to it."""
    from results.peers.tensorrt_engine import engine_runner

    return engine_runner(artifact.path)


def _edgevit(bundle: Path, threads: int) -> Runner:
    """A compiled bundle through the binding (its own core); its manifest says what input it takes."""
    from runtime.bundle import CORE, read_manifest
    from runtime.model import Model

    model = Model(bundle, threads)
    return Runner(model.run_tensor, Preprocess.from_manifest(read_manifest(bundle).input, bundle / CORE))
