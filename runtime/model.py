"""runtime.Model: a bundle run in this process through its own native core (lib/libedgevit.so), numpy only.

    with runtime.Model("bundle") as model:
        for p in model.classify(frame, order="bgr"):    # a path, a PIL image or an H x W x 3 uint8 array
            print(p.label, p.score)

The core verifies the bundle (signature with a trust store, sha256 of every file, architecture, CPU features)
before loading it, preprocesses and runs it; this class adds types and errors. Arrays are passed without a copy
(runtime/pixels.py), results are returned as new numpy arrays. numpy is imported on first use, so a process that
only benchmarks (the core's loop) carries none of it: `python -m runtime bench` measures what the core costs.
"""

from __future__ import annotations

import ctypes
import functools
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from runtime.bench import BenchResult
from runtime.bundle import CORE, MANIFEST
from runtime.core import BenchStats, Class, Core, Info, Options, load_core
from runtime.errors import EdgevitError

if TYPE_CHECKING:
    import numpy as np


class Prediction(NamedTuple):
    """One class of a top-k answer: index into the logits, its label, its softmax probability."""

    index: int
    label: str
    score: float


def _unpack_tar(path: Path) -> Path:
    """A .tar bundle is unpacked into a temporary directory (kept for the life of the process); a member that is not
    a plain file or folder inside it is refused (Debian bookworm's Python 3.11.2 predates tarfile's filters)."""
    import tarfile
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="edgevit-bundle-"))
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            if any(not (m.isfile() or m.isdir()) or out.resolve() not in (out / m.name).resolve().parents for m in members):
                raise tarfile.TarError("a member is not a plain file inside the bundle")
            tar.extractall(out, members)
    except (tarfile.TarError, OSError) as err:
        raise EdgevitError(f"bundle {path}: not a bundle directory or a readable tar archive ({type(err).__name__})") from None
    entries = list(out.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else out


def _core_of(bundle: Path) -> Core:
    """The bundle's own core; a loader refusal is one line (another architecture named from the manifest)."""
    try:
        return load_core(bundle / CORE)
    except OSError as err:
        import json
        import platform

        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
        try:
            target = json.loads((bundle / MANIFEST).read_text())["target"]
            arch, preset = target["arch"], target["preset"]
        except (OSError, ValueError, KeyError, TypeError):
            arch = preset = None
        if arch is not None and arch != machine:
            raise EdgevitError(f"bundle {bundle} was built for {arch} (target {preset}); this machine is {machine}") from None
        if not (bundle / MANIFEST).is_file():  # the core's own first check, which it cannot make unloaded
            raise EdgevitError(f"{bundle} is not an edgevit bundle (no {MANIFEST})") from None
        if not (bundle / CORE).is_file():
            raise EdgevitError(f"bundle {bundle} has no {CORE} (rebuild it with this edgevit)") from None
        raise EdgevitError(f"bundle {bundle}: cannot load {CORE} ({str(err).splitlines()[0]})") from None


class Model:
    """A verified, loaded bundle. `threads` 0: every CPU this process may use (it takes effect for the first model
    a process opens); `trusted_keys`: a trust store file (default: $EDGEVIT_TRUSTED_KEYS, else
    /etc/edgevit/trusted_keys when it exists)."""

    def __init__(self, bundle: str | Path, threads: int = 0, *, trusted_keys: str | Path | None = None):
        path = Path(bundle)
        if not path.exists():
            raise EdgevitError(f"bundle not found: {path}")
        if path.is_file():
            path = _unpack_tar(path)
        self.path = path
        self.core = _core_of(path)
        lib = self.core.lib
        options = Options(threads, None if trusted_keys is None else str(trusted_keys).encode())
        self._handle = lib.edgevit_open_with(str(path).encode(), ctypes.byref(options))
        if not self._handle:
            raise self.core.error()
        self._close = weakref.finalize(self, lib.edgevit_close, self._handle)
        info: Info = lib.edgevit_get_info(self._handle).contents
        self.info = {name: _field(getattr(info, name)) for name, _ in Info._fields_ if name != "tome_schedule"}
        self.info["tome_schedule"] = [info.tome_schedule[i] for i in range(info.tome_depth)]
        self.labels = [lib.edgevit_label(self._handle, i).decode() for i in range(info.num_labels)]
        self._best = (Class * max(1, len(self.labels)))()

    @functools.cached_property
    def _input(self) -> np.ndarray:
        """The core's input buffer as bytes (valid while the model is open)."""
        import numpy as np

        size = ctypes.c_size_t()
        pointer = self.core.lib.edgevit_input(self._handle_or_fail(), ctypes.byref(size))
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_uint8)), shape=(size.value,))

    @functools.cached_property
    def _output(self) -> np.ndarray:
        """The core's output row (valid while the model is open)."""
        import numpy as np

        size = ctypes.c_size_t()
        pointer = self.core.lib.edgevit_output(self._handle_or_fail(), ctypes.byref(size))
        return np.ctypeslib.as_array(pointer, shape=(size.value,))

    @property
    def is_classifier(self) -> bool:
        return self.info["output"] == "logits"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        size = self.info["input_size"]
        return (1, 3, size, size)

    @property
    def input_dtype(self) -> np.dtype:
        import numpy as np

        return np.dtype(self.info["input_dtype"])

    def _handle_or_fail(self) -> int:
        if not self._close.alive:
            raise EdgevitError(f"model {self.path} is closed")
        return self._handle

    def _feed(self, image: Any, order: str, run: bool) -> None:
        """Decode (a path) or take pixels, preprocess into the input buffer, and run unless `run` is False."""
        from runtime.pixels import is_path, pixel_args

        lib, handle = self.core.lib, self._handle_or_fail()
        if is_path(image):
            function = lib.edgevit_run_file if run else lib.edgevit_preprocess_file
            self.core.check(function(handle, str(image).encode()))
            return
        pixels = pixel_args(image, order)
        function = lib.edgevit_run_image if run else lib.edgevit_preprocess_image
        self.core.check(function(handle, *pixels.args()))

    def run(self, image: Any, *, order: str = "rgb") -> np.ndarray:
        """The model's output row for one image: logits [classes], or the embedding [D] of a features bundle."""
        self._feed(image, order, run=True)
        return self._output.copy()

    def classify(self, image: Any, k: int = 5, *, order: str = "rgb") -> list[Prediction]:
        """The k best classes of one image, best first, with softmax probabilities (a classifier bundle)."""
        self._feed(image, order, run=True)
        return self.top_k(k)

    def top_k(self, k: int = 5) -> list[Prediction]:
        """The k best classes of the last run."""
        best = self._best if k <= len(self._best) else (Class * k)()
        n = self.core.lib.edgevit_top_k(self._handle_or_fail(), k, best)
        if n < 0:
            raise self.core.error()
        return [Prediction(best[i].index, self.labels[best[i].index], float(best[i].probability)) for i in range(n)]

    def embed(self, image: Any, *, order: str = "rgb") -> np.ndarray:
        """The embedding [D] of one image (a features bundle)."""
        if self.is_classifier:
            raise EdgevitError(f"bundle {self.path} is a classifier; embed() needs a --output features bundle")
        return self.run(image, order=order)

    def last_output(self) -> np.ndarray:
        """A view of the core's output row of the last run (valid until the next run)."""
        return self._output

    def preprocess(self, image: Any, *, order: str = "rgb") -> np.ndarray:
        """The model input [3, H, W] for one image, as the core computes it before running."""
        self._feed(image, order, run=False)
        return self._input.view(self.input_dtype).reshape(self.input_shape[1:]).copy()

    def run_tensor(self, tensor: np.ndarray) -> np.ndarray:
        """Run an already preprocessed input ([1, 3, H, W] or [3, H, W] of the manifest's dtype): outputs [1, D]."""
        import numpy as np

        data = np.ascontiguousarray(tensor, dtype=self.input_dtype)
        if data.size * data.itemsize != self._input.size:
            raise EdgevitError(f"input of shape {tuple(np.shape(tensor))}; the model takes {self.input_shape} "
                               f"{self.input_dtype}")
        self.core.check(self.core.lib.edgevit_run_tensor(self._handle_or_fail(), data.ctypes.data, self._input.size))
        return self._output[None].copy()

    def bench(self, *, warmup: int = 10, repeat: int = 50) -> BenchResult:
        """Latency of `repeat` runs after `warmup` (the core's loop, on a fixed pseudo-random input)."""
        stats = BenchStats()
        self.core.check(self.core.lib.edgevit_bench(self._handle_or_fail(), warmup, repeat, ctypes.byref(stats)))
        return BenchResult(median_ms=stats.median_ms, p90_ms=stats.p90_ms, p99_ms=stats.p99_ms, mean_ms=stats.mean_ms,
                           min_ms=stats.min_ms, n=stats.n, peak_rss_mb=stats.peak_rss_mb)

    def close(self) -> None:
        """Free the model (also done when the object is collected)."""
        self._close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _field(value):
    return value.decode() if isinstance(value, bytes) else value
