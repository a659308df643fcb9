"""Building the native runner (runtime/native: edgevit-run on the edgevit.h C API) into a bundle.

A bundle that carries `bin/edgevit-run` and `lib/` (the TVM runtime libraries of its target's wheels)
runs on a board with nothing else installed: glibc and libstdc++ only. The runner is compiled once
per toolchain and source version and cached (under $EDGEVIT_CACHE or ~/.cache/edgevit, native/), so
a compile only copies it. libjpeg, libpng and zlib are linked in statically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compile.cache import edgevit_cache_dir
from runtime.bundle import RUNNER
from runtime.cpu_features import machine_arch
from runtime.errors import EdgevitError
from runtime.versions import versions
from targets import TargetPreset

SOURCE_DIR = Path(__file__).resolve().parent.parent / "runtime" / "native"
API_SOURCES = ("edgevit.cc", "image.cc", "sha256.cc", "cpu_features.cc")
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
CUDA_LIB = "libtvm_runtime_cuda.so"
# The image libraries linked in statically: (library name for -l, its header, the Debian package with both)
STATIC_LIBS = (("jpeg", "jpeglib.h", "libjpeg62-turbo-dev"), ("png16", "png.h", "libpng-dev"), ("z", "zlib.h", "zlib1g-dev"))


@dataclass(frozen=True)
class NativeToolchain:
    """What builds the runner for one architecture: a (cross) compiler and the target's libraries."""

    arch: str  # x86_64 | aarch64: where the runner runs
    cxx: tuple[str, ...]  # compiler command, e.g. ("g++",) or ("aarch64-linux-gnu-g++",)
    include_dirs: tuple[Path, ...]  # tvm/include and tvm_ffi/include of the wheels, then any others
    tvm_lib_dir: Path  # the target's libtvm_runtime.so (and libtvm_runtime_cuda.so)
    ffi_lib_dir: Path  # the target's libtvm_ffi.so
    static_lib_dirs: tuple[Path, ...]  # the target's libjpeg.a, libpng16.a, libz.a
    tvm_version: str  # of the wheel the libraries come from (bench --json reports it)
    compiler_hint: str  # what to do when `cxx` is missing
    package_suffix: str = ""  # Debian multiarch suffix for library packages (":arm64" for a cross build)

    def digest(self) -> str:
        """Hash of the toolchain, its libraries' contents and the runner's sources: the cache key."""
        sha = hashlib.sha256(repr(self).encode())
        sources = sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in {".cc", ".h"})
        for path in [*sources, self.tvm_lib_dir / RUNTIME_LIBS[0], self.ffi_lib_dir / RUNTIME_LIBS[1]]:
            if path.is_file():
                sha.update(path.name.encode())
                sha.update(path.read_bytes())
        return sha.hexdigest()[:16]

    def link_command(self, sources: list[Path], out: Path) -> list[str]:
        """One compile-and-link command of `sources` (C++ files and .o objects) into program `out`."""
        return [
            *self.cxx, "-std=c++17", "-O2", "-s", "-Wall",
            f"-DEDGEVIT_VERSION=\"{versions()['edgevit']}\"", f"-DEDGEVIT_TVM_VERSION=\"{self.tvm_version}\"",
            *(f"-I{d}" for d in (SOURCE_DIR, *self.include_dirs)),
            *map(str, sources), "-o", str(out),
            f"-L{self.tvm_lib_dir}", f"-L{self.ffi_lib_dir}", "-ltvm_runtime", "-ltvm_ffi",
            *(f"-L{d}" for d in self.static_lib_dirs),
            "-Wl,-Bstatic", *(f"-l{lib}" for lib, _, _ in STATIC_LIBS), "-Wl,-Bdynamic",
            "-lm", "-Wl,-rpath,$ORIGIN/../lib",
        ]


def _package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (tvm would load the compiler)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EdgevitError(f"the {name} package is not installed; install apache-tvm and apache-tvm-ffi")
    return Path(next(iter(spec.submodule_search_locations)))


def host_toolchain() -> NativeToolchain:
    """This machine's g++, the installed tvm / tvm_ffi wheels' libraries, the system's static image libraries."""
    tvm, ffi = _package_dir("tvm"), _package_dir("tvm_ffi")
    arch = machine_arch()
    return NativeToolchain(
        arch=arch,
        cxx=(os.environ.get("CXX", "g++"),),
        include_dirs=(tvm / "include", ffi / "include"),
        tvm_lib_dir=tvm / "lib",
        ffi_lib_dir=ffi / "lib",
        static_lib_dirs=(Path(f"/usr/lib/{arch}-linux-gnu"),),
        tvm_version=versions(tvm="apache-tvm")["tvm"],
        compiler_hint="install g++ or pass --no-native",
    )


def cross_toolchain(arch: str, cxx: str) -> NativeToolchain:
    """A cross build for `arch`: its compiler, the TVM runtime libraries of its wheels (fetched once,
    compile.runtime_libs), the host's TVM headers and Debian's multiarch static image libraries."""
    from compile.runtime_libs import wheel_libraries

    host = host_toolchain()
    libraries = wheel_libraries(arch)
    multiarch = {"aarch64": "arm64"}[arch]
    return dataclasses.replace(
        host, arch=arch, cxx=(cxx,), tvm_lib_dir=libraries, ffi_lib_dir=libraries,
        static_lib_dirs=(Path(f"/usr/lib/{arch}-linux-gnu"),),
        compiler_hint=f"install g++-{cxx.removesuffix('-g++')} or pass --no-native", package_suffix=f":{multiarch}",
    )


def toolchain_for(preset: TargetPreset) -> NativeToolchain:
    """The toolchain that builds the runner for a target preset, checked before any heavy work: the
    compiler exists and the target's static image libraries are installed."""
    toolchain = host_toolchain() if preset.cross_compiler is None else cross_toolchain(preset.arch, preset.cross_compiler)
    if shutil.which(toolchain.cxx[0]) is None:
        raise EdgevitError(f"{toolchain.cxx[0]} not found (it builds bin/edgevit-run for {preset.name}); "
                           f"{toolchain.compiler_hint}")
    for lib, _, package in STATIC_LIBS:
        if not any((d / f"lib{lib}.a").is_file() for d in toolchain.static_lib_dirs):
            raise EdgevitError(f"bin/edgevit-run for {preset.name} links lib{lib}.a statically: install "
                               f"{package}{toolchain.package_suffix} (or pass --no-native)")
    return toolchain


# What a failed build's output says is missing -> the Debian package that provides it.
_MISSING = (
    *((rf"{re.escape(header)}|-l{lib}\b", package) for lib, header, package in STATIC_LIBS),
    (r"tvm/ffi/|-ltvm_ffi\b", "the apache-tvm-ffi wheel"),
    (r"tvm/runtime/|-ltvm_runtime\b", "the apache-tvm wheel"),
)


def _build_error(toolchain: NativeToolchain, output: str) -> EdgevitError:
    """One line naming what to install, or the compiler's first error."""
    for pattern, package in _MISSING:
        if re.search(pattern, output):
            suffix = toolchain.package_suffix if package.endswith("-dev") else ""
            return EdgevitError(f"cannot build edgevit-run for {toolchain.arch}: install {package}{suffix} "
                                "(or pass --no-native)")
    first = next((line for line in output.splitlines() if "error" in line), output.strip()[-300:])
    return EdgevitError(f"cannot build edgevit-run for {toolchain.arch}: {first.strip()}")


def compile_program(toolchain: NativeToolchain, out: Path, main_source: Path) -> Path:
    """Compile `main_source` (the runner's .cc, or a C program using edgevit.h) with the C API into `out`."""
    with tempfile.TemporaryDirectory(prefix="edgevit-native-") as tmp:
        main = main_source
        try:
            if main_source.suffix == ".c":  # C, not C++: compiled on its own, then linked with the API
                main = Path(tmp) / "main.o"
                _check(toolchain, [*toolchain.cxx, "-x", "c", "-std=c11", "-O2", "-Wall", f"-I{SOURCE_DIR}",
                                   "-c", str(main_source), "-o", str(main)])
            _check(toolchain, toolchain.link_command([main, *(SOURCE_DIR / s for s in API_SOURCES)], out))
        except FileNotFoundError:
            raise EdgevitError(f"{toolchain.cxx[0]} not found; {toolchain.compiler_hint}") from None
    return out


def _check(toolchain: NativeToolchain, command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise _build_error(toolchain, result.stdout + result.stderr)


def cached_runner(toolchain: NativeToolchain) -> Path:
    """edgevit-run for `toolchain`, compiled once per toolchain and source digest."""
    cache = edgevit_cache_dir() / "native"
    binary = cache / f"{toolchain.arch}-{toolchain.digest()}" / "edgevit-run"
    if not binary.is_file():
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(f".edgevit-run.{os.getpid()}")
        try:
            compile_program(toolchain, partial, SOURCE_DIR / "edgevit_run.cc")
            partial.replace(binary)  # atomic: a concurrent build never sees half a binary
        finally:
            partial.unlink(missing_ok=True)
    return binary


def build_runner(bundle_dir: Path, toolchain: NativeToolchain, *, cuda: bool = False) -> list[str]:
    """Put bin/edgevit-run and lib/ (TVM runtime libraries, + CUDA's when `cuda`) into `bundle_dir`.

    Returns the bundle-relative paths written, for the manifest's `files`.
    """
    libs = [toolchain.tvm_lib_dir / RUNTIME_LIBS[0], toolchain.ffi_lib_dir / RUNTIME_LIBS[1]]
    if cuda:
        libs.append(toolchain.tvm_lib_dir / CUDA_LIB)
    for lib in libs:
        if not lib.is_file():
            raise EdgevitError(f"cannot build edgevit-run for {toolchain.arch}: {lib} not found "
                               "(install the apache-tvm / apache-tvm-ffi wheels for it)")
    binary = cached_runner(toolchain)
    (bundle_dir / "bin").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "lib").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(binary, bundle_dir / RUNNER)
    (bundle_dir / RUNNER).chmod(0o755)
    written = [RUNNER]
    for lib in libs:
        shutil.copyfile(lib, bundle_dir / "lib" / lib.name)
        written.append(f"lib/{lib.name}")
    return written
