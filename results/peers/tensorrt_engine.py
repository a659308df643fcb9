"""TensorRT engines: built from an ONNX graph on the GPU (once, when the peer is prepared), run batch 1.

TensorRT 11 builds strongly typed networks only (its FP16 / INT8 builder flags are gone): the ONNX graph's
types decide each layer's precision. So TensorRT FP16 is built from a graph exported in half precision, and
TensorRT INT8 is explicit quantization: a QDQ graph (results.peers.ort_recipes.TENSORRT_INT8) whose scales
come from edgevit's calibration images, its unquantized layers in FP32. A TensorRT 10 build asks for strong
typing the same way. Device buffers are torch CUDA tensors (no pycuda).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

WORKSPACE_MIB = 4096


def build_engine(onnx_path: Path, plan_path: Path) -> Path:
    """Parse `onnx_path` into a strongly typed network, build it for GPU 0 and write the serialized plan."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    # TensorRT 10: strong typing is this flag; 11: always on, the flag accepted and ignored (a later release may drop it)
    network = builder.create_network(1 << int(creation.STRONGLY_TYPED) if hasattr(creation, "STRONGLY_TYPED") else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = str(parser.get_error(0)) if parser.num_errors else "no reason given"
        raise RuntimeError(f"TensorRT's ONNX parser refused {onnx_path.name}: {first}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_MIB << 20)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT built no engine from {onnx_path.name} (its log above says why)")
    plan_path.write_bytes(bytes(plan))
    return plan_path


def engine_runner(plan_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The engine as numpy [1, 3, H, W] float32 -> logits [1, classes] float32: copy in (cast to the engine's input
    type on the GPU), execute_async_v3 on its own stream, copy out; returns after the stream is done."""
    import tensorrt as trt
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT could not load {plan_path} (built by another TensorRT version or for another GPU?)")
    context = engine.create_execution_context()
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    buffers = {name: torch.empty(tuple(engine.get_tensor_shape(name)), dtype=dtypes[engine.get_tensor_dtype(name)],
                                 device="cuda") for name in names}
    for name, buffer in buffers.items():
        context.set_tensor_address(name, buffer.data_ptr())
    (x_name,) = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    (y_name,) = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    stream = torch.cuda.Stream()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.cuda.stream(stream):
            buffers[x_name].copy_(torch.from_numpy(x))
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            y = buffers[y_name].float().cpu()  # a copy to pageable host memory: waits for the stream
        return y.numpy()

    return run
