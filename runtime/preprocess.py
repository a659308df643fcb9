"""Image -> model input as a manifest's `input` describes it, computed by the native core (its one implementation:
Pillow's resampling bit for bit, runtime/native/image.cc), for code that has no open model: compile's calibration
and the inputs other runtimes are fed in comparisons. A model preprocesses its own inputs (Model.preprocess).

resize the short side to `resize` (bicubic or bilinear), center crop `size`, CHW float32 normalized per channel, or
CHW uint8 pixels for integer bundles (their first layer has the normalization folded into its weights).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.core import InputSpec, load_core
from runtime.errors import EdgevitError
from runtime.manifest import InputSpec as ManifestInput
from runtime.pixels import is_path, pixel_args


@dataclass(frozen=True)
class Preprocess:
    """The input transform of a model; `core` is the libedgevit.so that computes it (compile.native.host_core on
    a development machine, a bundle's lib/libedgevit.so elsewhere)."""

    size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    dtype: str = "float32"  # "uint8": raw pixels, normalization folded into the model
    core: Path | None = field(default=None, compare=False)

    @classmethod
    def from_manifest(cls, spec: ManifestInput, core: Path) -> Preprocess:
        return cls(size=spec.shape[-1], resize=spec.resize, mean=tuple(spec.mean), std=tuple(spec.std),
                   interpolation=spec.interpolation, dtype=spec.dtype, core=core)

    def load(self, image: Any, out: np.ndarray | None = None, *, order: str = "rgb") -> np.ndarray:
        """One image (a file path, a PIL image or an H x W x 3 uint8 array) into `out` ([3, size, size] of
        self.dtype, allocated when None)."""
        if out is None:
            out = np.empty((3, self.size, self.size), dtype=self.dtype)
        if out.dtype != np.dtype(self.dtype) or out.shape != (3, self.size, self.size) or not out.flags.c_contiguous:
            raise EdgevitError(f"preprocess output must be a contiguous [3, {self.size}, {self.size}] {self.dtype} array")
        core, handle = _preprocessor(self)
        if is_path(image):
            core.check(core.lib.edgevit_preprocessor_file(handle, str(image).encode(), out.ctypes.data))
        else:
            pixels = pixel_args(image, order)
            core.check(core.lib.edgevit_preprocessor_image(handle, *pixels.args(), out.ctypes.data))
        return out


@functools.cache
def _preprocessor(preprocess: Preprocess) -> tuple:
    """The core and its edgevit_preprocessor for a transform, made once per process."""
    if preprocess.core is None:
        raise EdgevitError("Preprocess needs the native core (core=...): compile.native.host_core() on this machine")
    core = load_core(preprocess.core)
    spec = InputSpec(preprocess.size, preprocess.resize, (ctypes.c_float * 3)(*preprocess.mean),
                     (ctypes.c_float * 3)(*preprocess.std), preprocess.interpolation.encode(), preprocess.dtype.encode())
    handle = core.lib.edgevit_preprocessor_new(ctypes.byref(spec))
    if not handle:
        raise core.error()
    return core, handle
