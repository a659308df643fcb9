"""An emulated aarch64 board for tests: a Debian arm64 sysroot run through qemu-aarch64-static.

The sysroot holds python3.11 and the runtime's dependencies as aarch64 wheels (numpy, pillow,
apache-tvm, plus what the TVM RPC server needs) and nothing else: no torch, no compiler. Its
.debs are fetched by `debootstrap --foreign` and unpacked with dpkg-deb (no second stage: that
needs binfmt_misc, which is not mounted here). Programs run as
`qemu-aarch64-static -cpu CPU -L SYSROOT SYSROOT/usr/bin/python3.11 ...`; qemu emulates
/proc/self/auxv for the CPU it emulates, so `-cpu cortex-a72` reports no dot product.

The sysroot is built once into the cache directory (atomically, under a file lock) and reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.cache import edgevit_cache_dir

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = ("python3",)
WHEELS = (
    "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "numpy==2.4.6", "pillow==13.0.0",
    "psutil==7.2.2", "tornado==6.6.1", "cloudpickle==2.1.0",
)
SITE = "opt/edgevit-site"
QEMU = "qemu-aarch64-static"


def _recipe_digest() -> str:
    return hashlib.sha256(repr((SUITE, DEBIAN_PACKAGES, WHEELS)).encode()).hexdigest()[:12]


def _run(argv: list[str], **kwargs) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({result.returncode}): {result.stderr[-2000:]}")


def _populate(root: Path) -> None:
    """Fetch and unpack the arm64 packages, then install the aarch64 wheels into SITE."""
    _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
          f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, str(root), MIRROR])
    for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    shutil.rmtree(root / "var/cache/apt/archives")
    shutil.rmtree(root / "debootstrap", ignore_errors=True)
    _run(["python3", "-m", "pip", "install", "-q", "--no-cache-dir", "--target", str(root / SITE),
          "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux_2_17_aarch64",
          "--platform", "manylinux2014_aarch64", "--only-binary=:all:", "--python-version", "3.11",
          "--implementation", "cp", *WHEELS],
         env={**os.environ, "PIP_CONSTRAINT": ""})


def build_sysroot(cache_dir: Path) -> Path:
    """The cached arm64 sysroot, built on first use (a few minutes, about 400 MB)."""
    root = cache_dir / f"sysroot-arm64-{_recipe_digest()}"
    if (root / ".complete").is_file():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "sysroot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").is_file():
            return root
        tmp = cache_dir / f".sysroot-tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _populate(tmp)
            (tmp / ".complete").write_text(_recipe_digest() + "\n")
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


@dataclass(frozen=True)
class EmulatedBoard:
    """An aarch64 'board': programs of `sysroot` run under qemu as the CPU model `cpu`."""

    sysroot: Path
    cpu: str

    def command(self, argv: list[str]) -> list[str]:
        """Host argv that runs the board program argv[0] (a path inside the sysroot) with its arguments."""
        program = argv[0] if argv[0].startswith(str(self.sysroot)) else str(self.sysroot) + argv[0]
        return [QEMU, "-cpu", self.cpu, "-L", str(self.sysroot), program, *argv[1:]]

    def python_executable(self) -> Path:
        """A host script that runs the board's python3.11 under qemu as this CPU.

        It lives in the sysroot's bin directory and is the emulated Python's argv[0] (qemu -0), so
        sys.executable points at it: when the board's Python starts a Python subprocess (TVM's RPC
        server does), that goes through qemu too instead of failing with 'Exec format error'.
        """
        wrapper = self.sysroot / "usr" / "bin" / f"python3.11-{self.cpu}"
        if not wrapper.is_file():
            argv = [QEMU, "-cpu", self.cpu, "-L", str(self.sysroot), "-0", str(wrapper),
                    str(self.sysroot / "usr/bin/python3.11")]
            tmp = wrapper.with_name(f".{wrapper.name}.{os.getpid()}")
            tmp.write_text("#!/bin/sh\nexec " + " ".join(argv) + ' "$@"\n')
            tmp.chmod(0o755)
            tmp.rename(wrapper)
        return wrapper

    def python_argv(self, args: list[str]) -> list[str]:
        """argv for the board's python3.11 with `args`."""
        return [str(self.python_executable()), *args]

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A clean environment: the board's site-packages first, then any PYTHONPATH given in `extra`."""
        extra = dict(extra or {})
        paths = [str(self.sysroot / SITE)] + ([extra.pop("PYTHONPATH")] if "PYTHONPATH" in extra else [])
        return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                "PYTHONPATH": ":".join(paths), "PYTHONDONTWRITEBYTECODE": "1", **extra}

    def run(self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout_s: float = 600) -> subprocess.CompletedProcess:
        """Run a host argv (from command/python_argv) with the board's environment, capturing text output."""
        return subprocess.run(argv, cwd=cwd, env=self.environment(env), capture_output=True, text=True,
                              timeout=timeout_s)


def emulated_board(cpu: str) -> EmulatedBoard:
    """A board with the cached sysroot and the given qemu CPU model (e.g. cortex-a76, cortex-a72)."""
    if shutil.which(QEMU) is None or shutil.which("debootstrap") is None:
        raise RuntimeError("emulated boards need qemu-user-static and debootstrap (bash .ci/install)")
    return EmulatedBoard(build_sysroot(edgevit_cache_dir()), cpu)
