"""Make this process load what a board's runtime loads, before anything imports TVM.

On a board only numpy, pillow and TVM's runtime are installed. tvm_ffi imports torch opportunistically
when it is present, which on a development host would add ~1 s and hundreds of MB to every number the
runtime reports, and `import tvm` loads the apache-tvm wheel's libtvm_compiler.so (~250 MB) unless told
to load only libtvm_runtime.so (and libtvm_ffi.so). Both are refused here, so the host measures what a
board would run: `python -m runtime` and the benchmarks' memory probe call this first.
"""

import os
import sys

NOT_ON_A_BOARD = ("torch", "timm", "onnx", "onnxruntime", "compile")


def load_as_on_a_board() -> None:
    """Refuse the imports a board lacks and have TVM load its runtime library only."""
    if "tvm" in sys.modules:
        raise RuntimeError("load_as_on_a_board() must run before tvm is imported")
    for name in NOT_ON_A_BOARD:
        sys.modules.setdefault(name, None)
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
