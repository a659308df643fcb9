"""An emulated aarch64 board for tests: the Debian arm64 sysroot (results/arm/sysroot.py) run through
qemu-aarch64-static.

Programs the board starts run on the host (execve is not emulated). For python, whose
sys.executable TVM's RPC server starts again, that executable is a host script in the sysroot,
`usr/bin/python3.11-CPU`, that runs the board's python under qemu as that CPU once more.
qemu emulates /proc/self/auxv (AT_HWCAP of the emulated CPU, so `-cpu cortex-a72` has no asimddp);
qemu 7.2 passes /proc/cpuinfo through from the host.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from results.arm.sysroot import NUMPY_ONLY, PYTHON, SITE, TVM, Recipe, build_sysroot
from tests.cache import edgevit_cache_dir

__all__ = ["NUMPY_ONLY", "PYTHON", "QEMU", "SITE", "EmulatedBoard", "bare_board", "emulated_board", "run_vm_functions"]

LAUNCHER = """#!/bin/sh
# The board's python3.11 as a {cpu}; this script's path is that python's sys.executable (qemu -0).
root=$(cd "$(dirname "$0")/../.." && pwd)
exec qemu-aarch64-static -cpu {cpu} -L "$root" -0 "$0" "$root/usr/bin/python3.11" "$@"
"""
QEMU = "qemu-aarch64-static"


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
