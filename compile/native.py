"""Building the native core (runtime/native: lib/libedgevit.so, the C API of edgevit.h) and its thin program
bin/edgevit-run into a bundle.

Every bundle carries `lib/` (the core, the TVM runtime libraries of its target's wheels and the core's image and
crypto libraries) and `bin/edgevit-run`, so it runs on a board with nothing else installed: glibc and libstdc++,
from the shell or from Python with numpy (runtime.Model loads the bundle's own core). The core is compiled once per
toolchain and source version and cached (under $EDGEVIT_CACHE or ~/.cache/edgevit, native/), as a directory laid out
like a bundle's bin/ and lib/, so a compile only copies it and the host's copy can be loaded as it is (compile's
calibration preprocesses through it). libjpeg, libpng, zlib and libsodium are the target's Debian shared libraries,
shipped in lib/: Debian's static archives are not position-independent, so they cannot go into a shared core.
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
from runtime.bundle import CORE, RUNNER
from runtime.errors import EdgevitError
from runtime.versions import versions
from targets import TargetPreset
from targets.cpu_features import machine_arch

SOURCE_DIR = Path(__file__).resolve().parent.parent / "runtime" / "native"
CORE_SOURCES = ("edgevit.cc", "image.cc", "manifest.cc", "trust.cc", "files.cc", "cpu_features.cc")
RUNNER_SOURCES = ("edgevit_run.cc", "csv.cc")
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
CUDA_LIB = "libtvm_runtime_cuda.so"
# The core's system libraries, shipped in lib/: (name for -l, its header, the Debian -dev package, the file shipped)
SYSTEM_LIBS = (("jpeg", "jpeglib.h", "libjpeg62-turbo-dev", "libjpeg.so.62"), ("png16", "png.h", "libpng-dev", "libpng16.so.16"),
               ("z", "zlib.h", "zlib1g-dev", "libz.so.1"), ("sodium", "sodium.h", "libsodium-dev", "libsodium.so.23"))


@dataclass(frozen=True)
class NativeToolchain:
    """What builds the runner for one architecture: a (cross) compiler and the target's libraries."""

    arch: str  # x86_64 | aarch64: where the runner runs
    cxx: tuple[str, ...]  # compiler command, e.g. ("g++",) or ("aarch64-linux-gnu-g++",)
    include_dirs: tuple[Path, ...]  # tvm/include and tvm_ffi/include of the wheels, then any others
    tvm_lib_dir: Path  # the target's libtvm_runtime.so (and libtvm_runtime_cuda.so)
    ffi_lib_dir: Path  # the target's libtvm_ffi.so
    system_lib_dirs: tuple[Path, ...]  # the target's libjpeg, libpng16, libz, libsodium (SYSTEM_LIBS)
    tvm_version: str  # of the wheel the libraries come from (bench --json reports it)
    compiler_hint: str  # what to do when `cxx` is missing
    package_suffix: str = ""  # Debian multiarch suffix for library packages (":arm64" for a cross build)

    def digest(self) -> str:
        """Hash of the toolchain, its libraries' contents and the core's sources: the cache key."""
        sha = hashlib.sha256(repr(self).encode())
        sources = sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in {".cc", ".h"})
        for path in [*sources, *self.shipped_libraries()]:
            if path.is_file():
                sha.update(path.name.encode())
                sha.update(path.read_bytes())
        return sha.hexdigest()[:16]

    def core_command(self, out: Path) -> list[str]:
        """The compile-and-link command of the core, lib/libedgevit.so (only edgevit.h's functions exported)."""
        return [
            *self.cxx, "-std=c++17", "-O2", "-s", "-Wall", "-shared", "-fPIC", "-fvisibility=hidden",
            f"-DEDGEVIT_VERSION=\"{versions()['edgevit']}\"", f"-DEDGEVIT_TVM_VERSION=\"{self.tvm_version}\"",
            *(f"-I{d}" for d in (SOURCE_DIR, *self.include_dirs)),
            *(str(SOURCE_DIR / source) for source in CORE_SOURCES), "-o", str(out),
            f"-L{self.tvm_lib_dir}", f"-L{self.ffi_lib_dir}", "-ltvm_runtime", "-ltvm_ffi",
            *(f"-L{d}" for d in self.system_lib_dirs), *(f"-l{lib}" for lib, *_ in SYSTEM_LIBS),
            "-lm", "-Wl,-rpath,$ORIGIN",
        ]

    def link_command(self, sources: list[Path], out: Path, lib_dir: Path) -> list[str]:
        """One compile-and-link command of a program from `sources` (C++ files and .o objects) on the core in
        `lib_dir`; the program finds the core in ../lib beside its own directory (BUNDLE/bin -> BUNDLE/lib)."""
        return [
            *self.cxx, "-std=c++17", "-O2", "-s", "-Wall", f"-I{SOURCE_DIR}", *map(str, sources), "-o", str(out),
            f"-L{lib_dir}", "-ledgevit", f"-Wl,-rpath-link,{lib_dir}", "-Wl,-rpath,$ORIGIN/../lib",
        ]

    def shipped_libraries(self) -> list[Path]:
        """The libraries lib/ carries besides the core: TVM's runtime and the core's system libraries."""
        return [self.tvm_lib_dir / RUNTIME_LIBS[0], self.ffi_lib_dir / RUNTIME_LIBS[1],
                *(self._system_library(name) for *_, name in SYSTEM_LIBS)]

    def _system_library(self, name: str) -> Path:
        return next((d / name for d in self.system_lib_dirs if (d / name).is_file()), self.system_lib_dirs[0] / name)


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
        system_lib_dirs=(Path(f"/usr/lib/{arch}-linux-gnu"),),
        tvm_version=versions(tvm="apache-tvm")["tvm"],
        compiler_hint="install g++",
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
        system_lib_dirs=(Path(f"/usr/lib/{arch}-linux-gnu"),),
        compiler_hint=f"install g++-{cxx.removesuffix('-g++')}", package_suffix=f":{multiarch}",
    )


def toolchain_for(preset: TargetPreset) -> NativeToolchain:
    """The toolchain that builds the core for a target preset, checked before any heavy work: the compiler exists
    and the target's system libraries are installed."""
    toolchain = host_toolchain() if preset.cross_compiler is None else cross_toolchain(preset.arch, preset.cross_compiler)
    if shutil.which(toolchain.cxx[0]) is None:
        raise EdgevitError(f"{toolchain.cxx[0]} not found (it builds lib/libedgevit.so for {preset.name}); "
                           f"{toolchain.compiler_hint}")
    for lib, _, package, name in SYSTEM_LIBS:
        if not toolchain._system_library(name).is_file():
            raise EdgevitError(f"lib/libedgevit.so for {preset.name} links lib{lib}: install {package}{toolchain.package_suffix}")
    return toolchain


# What a failed build's output says is missing -> the Debian package that provides it.
_MISSING = (
    *((rf"{re.escape(header)}|-l{lib}\b", package) for lib, header, package, _ in SYSTEM_LIBS),
    (r"tvm/ffi/|-ltvm_ffi\b", "the apache-tvm-ffi wheel"),
    (r"tvm/runtime/|-ltvm_runtime\b", "the apache-tvm wheel"),
)


def _build_error(toolchain: NativeToolchain, output: str) -> EdgevitError:
    """One line naming what to install, or the compiler's first error."""
    for pattern, package in _MISSING:
        if re.search(pattern, output):
            suffix = toolchain.package_suffix if package.endswith("-dev") else ""
            return EdgevitError(f"cannot build the native core for {toolchain.arch}: install {package}{suffix}")
    first = next((line for line in output.splitlines() if "error" in line), output.strip()[-300:])
    return EdgevitError(f"cannot build the native core for {toolchain.arch}: {first.strip()}")


def _check(toolchain: NativeToolchain, command: list[str]) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise EdgevitError(f"{toolchain.cxx[0]} not found; {toolchain.compiler_hint}") from None
    if result.returncode != 0:
        raise _build_error(toolchain, result.stdout + result.stderr)


def _link_program(toolchain: NativeToolchain, out: Path, main_source: Path, lib_dir: Path) -> Path:
    """Compile `main_source` (C++ with the runner's CSV reader, or a C program using edgevit.h) on the core."""
    with tempfile.TemporaryDirectory(prefix="edgevit-native-") as tmp:
        if main_source.suffix == ".c":  # C, not C++: compiled on its own, then linked with the core
            main = [Path(tmp) / "main.o"]
            _check(toolchain, [*toolchain.cxx, "-x", "c", "-std=c11", "-O2", "-Wall", f"-I{SOURCE_DIR}",
                               "-c", str(main_source), "-o", str(main[0])])
        else:
            main = [main_source, *(SOURCE_DIR / s for s in RUNNER_SOURCES[1:])]
        _check(toolchain, toolchain.link_command(main, out, lib_dir))
    return out


def compile_program(toolchain: NativeToolchain, out: Path, main_source: Path) -> Path:
    """Compile `main_source` (a C program using edgevit.h, or C++) on `toolchain`'s core into `out`; put it in a
    bundle's bin/ and it finds the bundle's lib/."""
    return _link_program(toolchain, out, main_source, cached_core(toolchain) / "lib")


def cached_core(toolchain: NativeToolchain) -> Path:
    """A directory with lib/ (the core and, as links, the libraries it ships with) and bin/edgevit-run for
    `toolchain`, compiled once per toolchain and source digest; loadable as it is (host_core)."""
    cache = edgevit_cache_dir() / "native" / f"{toolchain.arch}-{toolchain.digest()}"
    if (cache / RUNNER).is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared
    try:
        (tmp / "lib").mkdir()
        (tmp / "bin").mkdir()
        for library in toolchain.shipped_libraries():
            (tmp / "lib" / library.name).symlink_to(library.resolve())
        _check(toolchain, toolchain.core_command(tmp / CORE))
        _link_program(toolchain, tmp / RUNNER, SOURCE_DIR / RUNNER_SOURCES[0], tmp / "lib")
        try:
            tmp.rename(cache)  # atomic: a concurrent build never sees half a core
        except OSError:
            if not (cache / RUNNER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def host_core() -> Path:
    """This machine's libedgevit.so, built on first use: the one preprocessing implementation, for compile-time
    calibration and host-side comparisons (runtime.preprocess.Preprocess)."""
    return cached_core(host_toolchain()) / CORE


def build_runner(bundle_dir: Path, toolchain: NativeToolchain, *, cuda: bool = False) -> list[str]:
    """Put lib/ (the core, TVM's runtime libraries, + CUDA's when `cuda`, the core's system libraries) and
    bin/edgevit-run into `bundle_dir`. Returns the bundle-relative paths written, for the manifest's `files`."""
    extra = [toolchain.tvm_lib_dir / CUDA_LIB] if cuda else []
    for lib in (*toolchain.shipped_libraries(), *extra):
        if not lib.is_file():
            raise EdgevitError(f"cannot build the native core for {toolchain.arch}: {lib} not found "
                               "(install the apache-tvm / apache-tvm-ffi wheels for it, or its -dev package)")
    core = cached_core(toolchain)
    (bundle_dir / "bin").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "lib").mkdir(parents=True, exist_ok=True)
    written = [RUNNER, *sorted(f"lib/{p.name}" for p in (core / "lib").iterdir())]
    for name in written:
        shutil.copyfile(core / name, bundle_dir / name)  # the links' targets
    (bundle_dir / RUNNER).chmod(0o755)
    for lib in extra:
        shutil.copyfile(lib, bundle_dir / "lib" / lib.name)
        written.append(f"lib/{lib.name}")
    return written
