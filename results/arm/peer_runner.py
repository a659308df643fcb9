"""A peer's inference between the instruction counter's window marks, run by the emulated board's python.

    python3.11 peer_runner.py litert|onnxruntime MODEL INPUT.npy WARMUP REPEAT

Standalone (the board has numpy and the peer's wheel, nothing of edgevit): loads the model on one thread,
runs WARMUP unmarked inferences, then REPEAT each inside syscall(EDGEVIT_MARK, 1) ... (EDGEVIT_MARK, 2)
(results/arm/counter.c). LiteRT's int8 input is quantized before the marks; only invoke() is inside.
Prints {"top1": CLASS} on stdout.
"""

import ctypes
import json
import sys

import numpy as np

EDGEVIT_MARK = 0x4556


def litert(model: str, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model, num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x)
    return interpreter.invoke, lambda: interpreter.get_tensor(out["index"])


def onnxruntime(model: str, x: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    outputs = []

    def run():
        outputs[:] = session.run(None, feed)

    return run, lambda: outputs[0]


def main(kind: str, model: str, input_path: str, warmup: str, repeat: str) -> None:
    mark = ctypes.CDLL(None).syscall
    run, output = {"litert": litert, "onnxruntime": onnxruntime}[kind](model, np.load(input_path))
    for _ in range(int(warmup)):
        run()
    for _ in range(int(repeat)):
        mark(EDGEVIT_MARK, 1)
        run()
        mark(EDGEVIT_MARK, 2)
    print(json.dumps({"top1": int(np.argmax(output()))}))


if __name__ == "__main__":
    main(*sys.argv[1:])
