"""`python -m results bench`: edgevit against other runtimes on one machine, on its CPU or (`--device cuda`) its
GPU (latency, peak memory, top-1).

    prepare.py             the peers (CPU: PyTorch, ONNX Runtime, ExecuTorch, LiteRT; cuda: PyTorch, ONNX Runtime
                           CUDA, TensorRT), prepared from the timm model
    ort_recipes.py         the ONNX export / quantization recipes (TensorRT INT8's QDQ graph among them)
    tensorrt_engine.py     TensorRT engines: built from ONNX, run batch 1
    cuda_device.py         the GPU: whether there is one, its facts, the preset that fits it
    edgevit_contenders.py  edgevit bundles given or compiled here
    inputs.py              what contenders are fed: the float input transform, the calibration images
    runners.py             a prepared contender loaded into a batch-1 callable
    peak_memory.py         peak RSS of one contender in a fresh process
    suite.py               the run: prepare, time interleaved, score, probe memory -> records
    table.py               the records as a markdown table and a plot
"""
