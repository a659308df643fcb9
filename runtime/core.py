"""The native core, a bundle's lib/libedgevit.so, through ctypes: the C API of runtime/native/edgevit.h with its
types, and nothing else. No compiler is needed on a board and nothing but the standard library is imported here;
every failing call raises EdgevitError carrying the core's one error line.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from runtime.errors import EdgevitError

c_char_p, c_int, c_size_t, c_void_p, c_double = ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_double
RGB, BGR = 0, 1  # edgevit_pixel_order


class Info(ctypes.Structure):
    """edgevit_info: what the manifest says about an open model."""

    _fields_ = [("model", c_char_p), ("target", c_char_p), ("quant", c_char_p), ("output", c_char_p),
                ("input_dtype", c_char_p), ("tome_schedule", ctypes.POINTER(c_int)), ("tome_depth", c_int),
                ("input_size", c_int), ("num_outputs", c_int), ("num_labels", c_int), ("signed_by", c_char_p),
                ("edgevit_version", c_char_p), ("tvm_version", c_char_p)]


class Class(ctypes.Structure):
    """edgevit_class: one entry of a top-k answer."""

    _fields_ = [("index", c_int), ("probability", ctypes.c_float)]


class Options(ctypes.Structure):
    """edgevit_options."""

    _fields_ = [("num_threads", c_int), ("trusted_keys", c_char_p)]


class InputSpec(ctypes.Structure):
    """edgevit_input_spec: a manifest's input transform."""

    _fields_ = [("size", c_int), ("resize", c_int), ("mean", ctypes.c_float * 3), ("std", ctypes.c_float * 3),
                ("interpolation", c_char_p), ("dtype", c_char_p)]


class BenchStats(ctypes.Structure):
    """edgevit_bench_result."""

    _fields_ = [("median_ms", c_double), ("p90_ms", c_double), ("p99_ms", c_double), ("mean_ms", c_double),
                ("min_ms", c_double), ("n", c_int), ("peak_rss_mb", c_double)]


_PIXELS = [c_void_p, c_int, c_int, ctypes.c_ssize_t, c_int]  # pixels, width, height, stride, order
_SIGNATURES = {  # name: (result type, argument types)
    "edgevit_last_error": (c_char_p, []),
    "edgevit_set_image_limits": (None, [ctypes.c_uint64, ctypes.c_uint64]),
    "edgevit_open_with": (c_void_p, [c_char_p, ctypes.POINTER(Options)]),
    "edgevit_close": (None, [c_void_p]),
    "edgevit_get_info": (ctypes.POINTER(Info), [c_void_p]),
    "edgevit_run_image": (c_int, [c_void_p, *_PIXELS]),
    "edgevit_run_file": (c_int, [c_void_p, c_char_p]),
    "edgevit_run_tensor": (c_int, [c_void_p, c_void_p, c_size_t]),
    "edgevit_preprocess_image": (c_int, [c_void_p, *_PIXELS]),
    "edgevit_preprocess_file": (c_int, [c_void_p, c_char_p]),
    "edgevit_input": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
    "edgevit_output": (ctypes.POINTER(ctypes.c_float), [c_void_p, ctypes.POINTER(c_size_t)]),
    "edgevit_top_k": (c_int, [c_void_p, c_int, ctypes.POINTER(Class)]),
    "edgevit_label": (c_char_p, [c_void_p, c_int]),
    "edgevit_bench": (c_int, [c_void_p, c_int, c_int, ctypes.POINTER(BenchStats)]),
    "edgevit_preprocessor_new": (c_void_p, [ctypes.POINTER(InputSpec)]),
    "edgevit_preprocessor_bytes": (c_size_t, [c_void_p]),
    "edgevit_preprocessor_image": (c_int, [c_void_p, *_PIXELS, c_void_p]),
    "edgevit_preprocessor_file": (c_int, [c_void_p, c_char_p, c_void_p]),
}


class Core:
    """One loaded libedgevit.so: `lib` has the C API's functions with their types."""

    def __init__(self, path: Path):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        for name, (result, arguments) in _SIGNATURES.items():
            function = getattr(self.lib, name)
            function.restype, function.argtypes = result, arguments

    def error(self) -> EdgevitError:
        """The core's last failure on this thread, as the exception to raise."""
        return EdgevitError(self.lib.edgevit_last_error().decode(errors="replace"))

    def check(self, status: int) -> None:
        """Raise the core's error line unless `status` is 0."""
        if status != 0:
            raise self.error()

    def set_image_limits(self, max_pixels: int = 0, max_bytes: int = 0) -> None:
        """Bounds on decoding image files (0 keeps one), checked against a file's header before decoding."""
        if max_pixels < 0 or max_bytes < 0:
            raise EdgevitError("image limits must be positive")
        self.lib.edgevit_set_image_limits(max_pixels, max_bytes)


@functools.cache
def load_core(path: Path) -> Core:
    """The core at `path`, loaded once per process (OSError when the loader refuses it)."""
    return Core(Path(path))
