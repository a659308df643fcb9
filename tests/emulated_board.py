"""An emulated aarch64 board for tests: a Debian arm64 sysroot run through qemu-aarch64-static.

Two sysroots (recipes): TVM's holds Debian bookworm's python3.11 and aarch64 wheels (apache-tvm, numpy, pillow,
plus tornado, psutil and cloudpickle for TVM's RPC server) in the interpreter's own dist-packages, for tests that
run TVM itself on the board; NUMPY_ONLY holds Debian's python3 and python3-numpy and nothing else (no TVM, no pip,
no compiler): what `python -m runtime` needs beside a bundle. Its .debs are fetched by
`debootstrap --foreign` and unpacked with dpkg-deb; the second stage cannot run here: it executes
aarch64 maintainer scripts, and without binfmt_misc a program started inside qemu-user is run by
the host kernel, which cannot execute aarch64 binaries.

How a program of the board sees paths: `qemu -L SYSROOT` makes an absolute path resolve inside
the sysroot when it exists there and on the host otherwise. The sysroot therefore keeps no empty
mount points (/tmp, /proc, /dev, /home, /root, ...), so the host repository, pytest's tmp_path
and /dev are the board's too. qemu emulates /proc/self/auxv (AT_HWCAP of the emulated CPU, so
`-cpu cortex-a72` has no asimddp); qemu 7.2 passes /proc/cpuinfo through from the host.

Programs the board starts run on the host (execve is not emulated). For python, whose
sys.executable TVM's RPC server starts again, that executable is a host script in the sysroot,
`usr/bin/python3.11-CPU`, that runs the board's python under qemu as that CPU once more.

The sysroot is built once into the cache directory (atomically, under a file lock) and reused.
"""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.cache import edgevit_cache_dir

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
LAUNCHER = """#!/bin/sh
# The board's python3.11 as a {cpu}; this script's path is that python's sys.executable (qemu -0).
root=$(cd "$(dirname "$0")/../.." && pwd)
exec qemu-aarch64-static -cpu {cpu} -L "$root" -0 "$0" "$root/usr/bin/python3.11" "$@"
"""
# Not needed to run python; mount points must go so the host's paths show through (module docstring).
PRUNED = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
    "var/cache/apt", "var/lib/apt", "var/log", "debootstrap",
    "boot", "dev", "home", "media", "mnt", "opt", "proc", "root", "run", "srv", "sys", "tmp",
)
RECIPE_REVISION = 2  # bump when the build steps change
QEMU = "qemu-aarch64-static"


@dataclass(frozen=True)
class Recipe:
    """What a sysroot holds: Debian packages (with their dependencies) and aarch64 wheels; `alternatives` are the
    links (path -> target relative to it) their maintainer scripts would make with update-alternatives."""

    debian_packages: tuple[str, ...]
    wheels: tuple[str, ...] = ()
    alternatives: tuple[tuple[str, str], ...] = ()

    def digest(self) -> str:
        recipe = (RECIPE_REVISION, SUITE, self.debian_packages, self.wheels, WHEEL_PLATFORMS, SITE, PRUNED)
        return hashlib.sha256(repr((*recipe, *self.alternatives)).encode()).hexdigest()[:12]


TVM = Recipe(("python3",), WHEELS)
NUMPY_ONLY = Recipe(("python3", "python3-numpy"), alternatives=(  # numpy links the reference BLAS / LAPACK
    ("usr/lib/aarch64-linux-gnu/libblas.so.3", "blas/libblas.so.3"),
    ("usr/lib/aarch64-linux-gnu/liblapack.so.3", "lapack/liblapack.so.3")))


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({result.returncode}): {result.stderr[-2000:]}")


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
        platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
        _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(root / SITE), *platforms,
              "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *recipe.wheels])
    # Debian compiles the stdlib in a maintainer script; the host's 3.11 writes the same .pyc format.
    compileall.compile_dir(root / "usr/lib/python3.11", quiet=2, workers=os.cpu_count() or 1)


def build_sysroot(cache_dir: Path, recipe: Recipe = TVM) -> Path:
    """The cached arm64 sysroot of `recipe`, built on first use (TVM's: about 30 s and 560 MB here)."""
    name = f"sysroot-arm64-{recipe.digest()}"
    root = cache_dir / name
    if (root / ".complete").is_file():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "sysroot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").is_file():
            return root
        for unfinished in cache_dir.glob(".sysroot-tmp-*"):  # builders hold the lock: these crashed
            shutil.rmtree(unfinished)
        tmp = cache_dir / f".sysroot-tmp-{os.getpid()}"
        try:
            _populate(tmp, recipe)
            (tmp / ".complete").write_text(recipe.digest() + "\n")
            tmp.rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


@dataclass(frozen=True)
class EmulatedBoard:
    """An aarch64 'board': programs of `sysroot` run under qemu as the CPU model `cpu`."""

    sysroot: Path
    cpu: str

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """Host argv that runs board program argv[0] (a board path, e.g. /usr/bin/python3.11) with its
        arguments; `env` is set inside the board (qemu -E) on top of the environment qemu runs in."""
        program = str(self.sysroot / argv[0].lstrip("/"))
        argv0 = str(self.python_executable()) if argv[0] == PYTHON else program
        settings = [arg for key, value in (env or {}).items() for arg in ("-E", f"{key}={value}")]
        return [QEMU, "-cpu", self.cpu, "-L", str(self.sysroot), *settings, "-0", argv0, program, *argv[1:]]

    def host_program_argv(self, program: Path, args: list[str]) -> list[str]:
        """Host argv that runs an aarch64 program stored on the host (e.g. a bundle's bin/edgevit-run) on the
        board: its loader and libraries come from the sysroot, its own files from the host paths."""
        return [QEMU, "-cpu", self.cpu, "-L", str(self.sysroot), str(program), *args]

    def python_argv(self, args: list[str]) -> list[str]:
        """Host argv for the board's python3.11 with `args`."""
        return self.command([PYTHON, *args])

    def python_executable(self) -> Path:
        """A host script that runs the board's python3.11 as this CPU, and that python's sys.executable
        (qemu -0), so a python the board's python starts runs on the board too, not on the host."""
        launcher = self.sysroot / "usr/bin" / f"python3.11-{self.cpu}"
        if not launcher.is_file():
            tmp = launcher.with_name(f".{launcher.name}.{os.getpid()}")
            tmp.write_text(LAUNCHER.format(cpu=shlex.quote(self.cpu)))
            tmp.chmod(0o755)
            tmp.rename(launcher)
        return launcher

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A clean environment for board programs (none of the host's PYTHON*, LD_* or TVM_*), plus `extra`."""
        return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", **(extra or {})}

    def run(self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout_s: float = 600) -> subprocess.CompletedProcess:
        """Run a host argv (from command / python_argv) in the board's environment plus `env`; text output."""
        return subprocess.run(argv, cwd=cwd, env=self.environment(env), capture_output=True, text=True,
                              timeout=timeout_s)


# A board with nothing but the C and C++ runtimes, from the cross toolchain's own target libraries
# (Debian libc6-arm64-cross, libstdc++6-arm64-cross): what a self-contained bundle may assume.
CROSS_TARGET_LIBS = Path("/usr/aarch64-linux-gnu/lib")
GLIBC_AND_LIBSTDCXX = ("ld-linux-aarch64.so.1", "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0",
                       "librt.so.1", "libstdc++.so.6", "libgcc_s.so.1")


def bare_board(cpu: str, root: Path) -> EmulatedBoard:
    """A board under `root` whose sysroot holds only glibc, libstdc++ and libgcc_s (no Python, numpy or TVM).

    The loader's own directories must exist in the sysroot, and so must an (empty, so ignored) ld.so.cache:
    qemu would otherwise resolve them on the host, whose multiarch /lib/aarch64-linux-gnu (the arm64 -dev
    packages the runner links statically bring libc6:arm64) holds another build of glibc than this loader's.
    """
    if shutil.which(QEMU) is None:
        raise RuntimeError(f"emulated boards need {QEMU} (apt package qemu-user-static)")
    multiarch = root / "lib" / "aarch64-linux-gnu"
    multiarch.mkdir(parents=True, exist_ok=True)
    (root / "usr" / "lib" / "aarch64-linux-gnu").mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "ld.so.cache").write_bytes(b"")
    for name in GLIBC_AND_LIBSTDCXX:
        shutil.copy2((CROSS_TARGET_LIBS / name).resolve(), multiarch / name)
    os.replace(multiarch / "ld-linux-aarch64.so.1", root / "lib" / "ld-linux-aarch64.so.1")  # the ELF interpreter path
    return EmulatedBoard(root, cpu)


def emulated_board(cpu: str, recipe: Recipe = TVM) -> EmulatedBoard:
    """A board with the cached sysroot of `recipe` and the qemu CPU model `cpu` (cortex-a76: rpi5, cortex-a72: rpi4)."""
    for tool in (QEMU, "debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"emulated boards need {tool} (apt packages qemu-user-static, debootstrap)")
    return EmulatedBoard(build_sysroot(edgevit_cache_dir(), recipe), cpu)


VM_RUN = """
import sys, numpy as np, tvm
from tvm import relax
vm = relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())
inputs = np.load(sys.argv[2])
names = sorted({key.split("/")[0] for key in inputs.files})
outputs = {}
for name in names:
    args = [inputs[f"{name}/{i}"] for i in range(len([k for k in inputs.files if k.startswith(name + "/")]))]
    outputs[name] = vm[name](*map(tvm.runtime.tensor, args)).numpy()
np.savez(sys.argv[3], **outputs)
"""


def run_vm_functions(board: EmulatedBoard, library: Path, inputs: dict[str, list], work_dir: Path,
                     timeout_s: float = 900) -> dict:
    """Outputs of each named Relax VM function of an aarch64 `library`, called on the board with its inputs."""
    import numpy as np

    np.savez(work_dir / "inputs.npz", **{f"{name}/{i}": a for name, args in inputs.items() for i, a in enumerate(args)})
    argv = ["-c", VM_RUN, str(library), str(work_dir / "inputs.npz"), str(work_dir / "outputs.npz")]
    result = board.run(board.python_argv(argv), timeout_s=timeout_s)
    if result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    with np.load(work_dir / "outputs.npz") as outputs:
        return {name: outputs[name] for name in outputs.files}
