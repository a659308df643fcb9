"""The alternatives edgevit is measured against, each as a batch-1 callable on the same model and weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def pytorch_eager(model, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch eager FP32 under inference_mode with `threads` intra-op threads."""
    import torch

    torch.set_num_threads(threads)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def onnxruntime_fp32(model, threads: int, work_dir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime FP32 (CPU execution provider, all graph optimizations) on the exported model."""
    import onnxruntime as ort
    import torch

    path = work_dir / "model_fp32.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # contenders take turns in one process: a pool that keeps spinning after its run steals the
    # cores of the next one, so every pool here sleeps when idle
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def edgevit_bundle(bundle: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled bundle through the runtime's InferenceSession (TVM_NUM_THREADS set by the caller)."""
    from runtime.bundle import open_bundle
    from runtime.session import InferenceSession

    session = InferenceSession(open_bundle(bundle))
    return session.run
