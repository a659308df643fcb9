"""An emulated aarch64 board's software: a Debian arm64 sysroot with python3 and aarch64 wheels, built once.

Two sysroots (recipes): TVM's holds Debian bookworm's python3.11 and aarch64 wheels (apache-tvm, numpy, pillow,
plus tornado, psutil and cloudpickle for TVM's RPC server) in the interpreter's own dist-packages, for tests that
run TVM itself on the board and for the counts; NUMPY_ONLY holds Debian's python3 and python3-numpy and nothing
else (no TVM, no pip, no compiler): what `python -m runtime` needs beside a bundle. Its .debs are fetched by
`debootstrap --foreign` and unpacked with dpkg-deb; the second stage cannot run here: it executes
aarch64 maintainer scripts, and without binfmt_misc a program started inside qemu-user is run by
the host kernel, which cannot execute aarch64 binaries. The tests' emulated boards
(tests/emulated_board.py) and the instruction counts of `python -m results arm` run on it.

How a program of the board sees paths: `qemu -L SYSROOT` makes an absolute path resolve inside
the sysroot when it exists there and on the host otherwise. The sysroot therefore keeps no empty
mount points (/tmp, /proc, /dev, /home, /root, ...), so the host's paths are the board's too.

For counting, each board gets a root of its own (board_root): the sysroot's folders linked in, plus the
board's /proc/cpuinfo (qemu 7.2 shows a guest the host's x86 one, on which ONNX Runtime and LiteRT crash
in their CPU detection), and the peers' wheels (LiteRT, ONNX Runtime) in a folder of their own (peer_site).
Everything is built once into the cache directory, atomically, under a file lock.
"""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
WHEELS = (
    "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "numpy==2.4.6", "pillow==13.0.0",
    "psutil==7.2.2", "tornado==6.6.1", "cloudpickle==2.1.0",
    "ml-dtypes==0.6.0", "typing-extensions==4.16.0",  # apache-tvm's own dependencies, pinned too
)
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
SITE = "usr/lib/python3/dist-packages"  # on Debian's sys.path by default: no PYTHONPATH needed
PYTHON = "/usr/bin/python3.11"
# Not needed to run python; mount points must go so the host's paths show through (module docstring).
PRUNED = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
    "var/cache/apt", "var/lib/apt", "var/log", "debootstrap",
    "boot", "dev", "home", "media", "mnt", "opt", "proc", "root", "run", "srv", "sys", "tmp",
)
RECIPE_REVISION = 2  # bump when the build steps change
# The peers' aarch64 wheels and what their imports need beyond the sysroot's numpy / ml-dtypes (no resolver:
# onnxruntime's declared sympy is not imported to run a model).
PEER_WHEELS = (
    "ai-edge-litert==2.3.0", "onnxruntime==1.32.0", "flatbuffers==25.12.19", "protobuf==7.36.2",
    "packaging==26.2", "tqdm==4.70.1", "backports.strenum==1.2.8", "coloredlogs==15.0.1", "humanfriendly==10.0",
)
PEER_PLATFORMS = ("manylinux_2_27_aarch64", *WHEEL_PLATFORMS)  # ai-edge-litert 2.3.0 is a manylinux_2_27 wheel


def _digest(*recipe) -> str:
    return hashlib.sha256(repr(recipe).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Recipe:
    """What a sysroot holds: Debian packages (with their dependencies) and aarch64 wheels; `alternatives` are the
    links (path -> target relative to it) their maintainer scripts would make with update-alternatives."""

    debian_packages: tuple[str, ...]
    wheels: tuple[str, ...] = ()
    alternatives: tuple[tuple[str, str], ...] = ()

    def digest(self) -> str:
        return _digest(RECIPE_REVISION, SUITE, self.debian_packages, self.wheels, WHEEL_PLATFORMS, SITE, PRUNED,
                       *self.alternatives)


TVM = Recipe(("python3",), WHEELS)
NUMPY_ONLY = Recipe(("python3", "python3-numpy"), alternatives=(  # numpy links the reference BLAS / LAPACK
    ("usr/lib/aarch64-linux-gnu/libblas.so.3", "blas/libblas.so.3"),
    ("usr/lib/aarch64-linux-gnu/liblapack.so.3", "lapack/liblapack.so.3")))


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({result.returncode}): {result.stderr[-2000:]}")


def _cached_build(cache_dir: Path, name: str, populate: Callable[[Path], None]) -> Path:
    """cache_dir/name, made by populate(temporary folder) once: atomically, under a file lock."""
    root = cache_dir / name
    if (root / ".complete").is_file():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "sysroot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").is_file():
            return root
        for unfinished in cache_dir.glob(f".{name}-tmp-*"):  # builders hold the lock: these crashed
            shutil.rmtree(unfinished)
        tmp = cache_dir / f".{name}-tmp-{os.getpid()}"
        try:
            populate(tmp)
            (tmp / ".complete").write_text(name + "\n")
            tmp.rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _pip_target(target: Path, wheels: tuple[str, ...], platforms: tuple[str, ...], *extra: str) -> None:
    """Install aarch64 cp311 wheels into `target` (pip --target, no host packages involved)."""
    tags = [arg for platform in platforms for arg in ("--platform", platform)]
    _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target), *tags, *extra,
          "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *wheels])


def _populate(root: Path, recipe: Recipe) -> None:
    """Fetch and unpack the arm64 packages, install the aarch64 wheels, precompile the stdlib."""
    _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
          f"--include={','.join(recipe.debian_packages)}", SUITE, str(root), MIRROR])
    for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    for path in PRUNED:
        shutil.rmtree(root / path, ignore_errors=True)
    for link, target in recipe.alternatives:  # relative: qemu resolves the sysroot's paths, not the host's
        (root / link).symlink_to(target)
    if recipe.wheels:
        _pip_target(root / SITE, recipe.wheels, WHEEL_PLATFORMS)
    # Debian compiles the stdlib in a maintainer script; the host's 3.11 writes the same .pyc format.
    compileall.compile_dir(root / "usr/lib/python3.11", quiet=2, workers=os.cpu_count() or 1)


def build_sysroot(cache_dir: Path, recipe: Recipe = TVM) -> Path:
    """The cached arm64 sysroot of `recipe`, built on first use (TVM's: about 30 s and 560 MB here)."""
    return _cached_build(cache_dir, f"sysroot-arm64-{recipe.digest()}", lambda tmp: _populate(tmp, recipe))


def peer_site(cache_dir: Path) -> Path:
    """A folder of the peers' aarch64 wheels (LiteRT, ONNX Runtime), for the board python's PYTHONPATH."""
    return _cached_build(cache_dir, f"arm-peers-{_digest(PEER_WHEELS, PEER_PLATFORMS)}",
                         lambda tmp: _pip_target(tmp, PEER_WHEELS, PEER_PLATFORMS, "--no-deps"))


def board_root(cache_dir: Path, name: str, cpuinfo: str) -> Path:
    """A root for qemu -L: the sysroot's folders (links) and `cpuinfo` as /proc/cpuinfo."""
    sysroot = build_sysroot(cache_dir)

    def populate(root: Path) -> None:
        root.mkdir(parents=True)
        for entry in sysroot.iterdir():
            if not entry.name.startswith("."):
                (root / entry.name).symlink_to(entry)
        (root / "proc").mkdir()
        (root / "proc" / "cpuinfo").write_text(cpuinfo)

    return _cached_build(cache_dir, f"arm-board-{name}-{_digest(sysroot.name, cpuinfo)}", populate)
