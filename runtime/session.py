"""InferenceSession: a verified bundle loaded into the Relax VM, with its buffers allocated once.

The input tensor lives on the device for the whole session and is bound to the VM once
(`set_input`); each call copies the new image into it and invokes `main`. The VM's pooled
allocator keeps intermediate memory across calls, so steady-state inference does no allocation
beyond the returned logits.
"""

from __future__ import annotations

import numpy as np

from runtime.bundle import Bundle
from runtime.manifest import InputSpec


class InferenceSession:
    """Runs a bundle's model on this machine's CPU (or its CUDA GPU for CUDA bundles)."""

    def __init__(self, bundle: Bundle):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.bundle = bundle
        spec = bundle.manifest.input
        self.input_shape = tuple(spec.shape)
        self.input_dtype = spec.dtype
        self.device = tvm.cuda(0) if bundle.device == "cuda" else tvm.cpu(0)
        if bundle.device == "cuda":
            from runtime.cuda_kernels import load_cuda_runtime, use_precompiled_kernels

            load_cuda_runtime()
            use_precompiled_kernels(bundle.path)
        library = tvm.runtime.load_module(str(bundle.library))
        self.vm = VirtualMachine(library, self.device, memory_cfg="pooled")
        self.input = tvm.runtime.empty(self.input_shape, self.input_dtype, self.device)
        self.vm.set_input("main", self.input)

    def new_batch(self) -> np.ndarray:
        """An uninitialised host batch of the model's input shape and dtype (for Preprocess.load)."""
        return np.empty(self.input_shape, dtype=self.input_dtype)

    def example_batch(self, seed: int = 0) -> np.ndarray:
        """A fixed pseudo-random input of the right shape and dtype, for latency measurements."""
        return example_input(self.bundle.manifest.input, seed)

    def run_device(self, batch: np.ndarray):
        """Infer one batch ([N, 3, H, W] of the manifest's dtype); the output stays on the device."""
        self.input.copyfrom(batch)
        self.vm.invoke_stateful("main")
        return self.vm.get_outputs("main")

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Infer one batch and return its outputs as numpy: logits [N, classes], or embeddings [N, D] (features)."""
        return self.run_device(batch).numpy()


def example_input(input_spec: InputSpec, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random batch as the manifest's input spec describes (pixels for uint8 inputs)."""
    rng = np.random.default_rng(seed)
    shape, dtype = tuple(input_spec.shape), input_spec.dtype
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(dtype)


def top_k(logits: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """The k best classes of one row of logits with their softmax probabilities, best first."""
    row = logits.astype(np.float64)
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    best = np.argsort(-row)[:k]
    return [(int(i), float(probs[i])) for i in best]
