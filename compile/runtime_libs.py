"""The TVM runtime libraries of another architecture, for a cross-built native runner to link and ship.

They come from the installed versions' apache-tvm / apache-tvm-ffi wheels for that architecture, fetched
once with pip (binary wheels only, no dependencies) and unpacked into the cache: libtvm_runtime.so
(+ libtvm_runtime_cuda.so) from apache-tvm, libtvm_ffi.so from apache-tvm-ffi. The host's are the
installed packages' own; headers do not depend on the architecture, so the installed ones serve all.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from compile.cache import edgevit_cache_dir
from runtime.errors import EdgevitError
from runtime.versions import versions as installed_versions

WHEEL_PLATFORMS = {"aarch64": ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")}
# (distribution, path inside its wheel) of each library a runner needs
LIBRARIES = {
    "libtvm_runtime.so": ("apache-tvm", "tvm/lib/libtvm_runtime.so"),
    "libtvm_runtime_cuda.so": ("apache-tvm", "tvm/lib/libtvm_runtime_cuda.so"),
    "libtvm_ffi.so": ("apache-tvm-ffi", "tvm_ffi/lib/libtvm_ffi.so"),
}


def _versions() -> dict[str, str]:
    found = installed_versions(**{dist: dist for dist in ("apache-tvm", "apache-tvm-ffi")})
    return {dist: found[dist] for dist in ("apache-tvm", "apache-tvm-ffi")}


def _fetch(arch: str, out: Path) -> None:
    """Download the installed versions' wheels for `arch` and unpack the runtime libraries into `out`."""
    platforms = [arg for platform in WHEEL_PLATFORMS[arch] for arg in ("--platform", platform)]
    wanted = [f"{dist}=={version}" for dist, version in _versions().items()]
    with tempfile.TemporaryDirectory(prefix="edgevit-wheels-") as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "--only-binary=:all:", *platforms, "--python-version", "3.11", "--implementation", "cp",
             "-d", tmp, *wanted],
            capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgevitError(f"cannot fetch the {arch} TVM runtime wheels ({', '.join(wanted)}) with pip: {last}; "
                               "the native core of every bundle links them")
        wheels = list(Path(tmp).glob("*.whl"))
        for name, (dist, member) in LIBRARIES.items():
            prefix = dist.replace("-", "_")
            wheel = next(w for w in wheels if w.name.startswith(prefix + "-"))
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)


def wheel_libraries(arch: str) -> Path:
    """A directory holding the TVM runtime libraries (LIBRARIES) of `arch`'s wheels of the installed versions,
    fetched once into the cache."""
    if arch not in WHEEL_PLATFORMS:
        raise EdgevitError(f"no TVM runtime wheels known for {arch}: the native core cannot be built for it")
    versions = _versions()
    cache = edgevit_cache_dir() / "tvm-runtime" / f"{arch}-tvm{versions['apache-tvm']}-ffi{versions['apache-tvm-ffi']}"
    if not (cache / ".complete").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (cache / ".complete").is_file():
                tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
                try:
                    _fetch(arch, tmp)
                    (tmp / ".complete").write_text(f"{versions}\n")
                    if cache.exists():  # left by a fetch that crashed before .complete
                        shutil.rmtree(cache)
                    tmp.rename(cache)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return cache
