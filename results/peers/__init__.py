"""`python -m results bench`: edgevit against other runtimes on one machine (latency, peak memory, top-1).

    prepare.py             the peers (PyTorch, ONNX Runtime, ExecuTorch, LiteRT), prepared from the timm model
    ort_recipes.py         the ONNX Runtime export / quantization recipes
    edgevit_contenders.py  edgevit bundles given or compiled here
    inputs.py              what contenders are fed: the float input transform, the calibration images
    runners.py             a prepared contender loaded into a batch-1 callable
    peak_memory.py         peak RSS of one contender in a fresh process
    suite.py               the run: prepare, time interleaved, score, probe memory -> records
    table.py               the records as a markdown table and a plot
"""
