"""The instruction counter (results/arm/counter.c) built for the installed qemu-user, once, into the cache.

Only Debian's dynamic `qemu-aarch64` (package qemu-user) loads TCG plugins; `qemu-user-static`, which the
emulated-board tests use, cannot. A plugin is built against the plugin header of the very qemu that loads
it: Debian ships that header in no binary package, so it is taken from Debian's own qemu source package
(`apt-get source --download-only`, through a private apt configuration that leaves /etc/apt alone).
`.ci/install` builds it (`python -m results.arm.plugin`); otherwise the first count does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from compile.cache import edgevit_cache_dir
from runtime.errors import EdgevitError

QEMU = "qemu-aarch64"
QEMU_PACKAGE = "qemu-user"
SOURCE = Path(__file__).with_name("counter.c")
HEADER = "include/qemu/qemu-plugin.h"
INSTALL_HINT = "apt-get install qemu-user (beside qemu-user-static; the static build cannot load plugins)"


def qemu_binary() -> str:
    """The dynamic qemu-aarch64 that loads plugins, or an error saying how to get it."""
    path = shutil.which(QEMU)
    if path is None:
        raise EdgevitError(f"{QEMU} not found: {INSTALL_HINT}")
    return path


def _qemu_source_version() -> str:
    """Version of the Debian source package qemu-user was built from (its plugin header must match)."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", QEMU_PACKAGE], capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise EdgevitError(f"the Debian package {QEMU_PACKAGE} is not installed: {INSTALL_HINT}")
    return result.stdout.strip()


def _deb_src_sources(folder: Path) -> None:
    """This machine's Debian archives as deb-src entries, written into `folder` (a private SourceParts)."""
    etc = Path("/etc/apt")
    for source in sorted((etc / "sources.list.d").glob("*.sources")):
        text = source.read_text().replace("Types: deb\n", "Types: deb-src\n")
        (folder / source.name).write_text(text)
    lists = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    lines = [line.replace("deb ", "deb-src ", 1) for path in lists if path.is_file()
             for line in path.read_text().splitlines() if line.startswith("deb ")]
    (folder / "deb-src.list").write_text("\n".join(lines) + "\n")


def _fetch_header(version: str, dest: Path) -> None:
    """Download Debian's qemu source `version` and keep only the plugin header, at `dest`."""
    with tempfile.TemporaryDirectory(prefix="edgevit-qemu-src-") as tmp:
        work = Path(tmp)
        (work / "sources.d").mkdir()
        (work / "lists" / "partial").mkdir(parents=True)
        _deb_src_sources(work / "sources.d")
        options = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={work / 'sources.d'}",
                   "-o", f"Dir::State::Lists={work / 'lists'}", "-qq"]
        for args in (["update"], ["source", "--download-only", f"qemu={version}"]):
            result = subprocess.run(["apt-get", *options, *args], cwd=work, capture_output=True, text=True)
            if result.returncode != 0:
                raise EdgevitError(f"cannot fetch Debian's qemu {version} source for the plugin header "
                                   f"(apt-get {args[0]}: {(result.stderr.strip().splitlines() or ['?'])[-1]}); "
                                   "run bash .ci/install as root with the Debian archive reachable")
        (tarball,) = work.glob("qemu_*.orig.tar.xz")
        with tarfile.open(tarball) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith(HEADER))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(archive.extractfile(member).read())


def build_plugin() -> Path:
    """libcounter.so for the installed qemu-user, built once per qemu version and source (under a file lock)."""
    qemu_binary()
    version = _qemu_source_version()
    cache = edgevit_cache_dir() / "arm-counter"
    header = cache / f"qemu-{version.replace(':', '_')}" / "qemu-plugin.h"
    digest = hashlib.sha256(SOURCE.read_bytes() + version.encode()).hexdigest()[:16]
    plugin = cache / digest / "libcounter.so"
    if plugin.is_file():
        return plugin
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not plugin.is_file():
            if not header.is_file():
                _fetch_header(version, header)
            _compile(header.parent, plugin)
    return plugin


def _compile(include_dir: Path, plugin: Path) -> None:
    if shutil.which("gcc") is None:
        raise EdgevitError("gcc not found (it builds the qemu counter plugin): apt-get install gcc")
    plugin.parent.mkdir(parents=True, exist_ok=True)
    partial = plugin.with_name(f".libcounter.{os.getpid()}.so")
    command = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", f"-I{include_dir}", str(SOURCE), "-o", str(partial), "-lpthread"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise EdgevitError(f"cannot build the counter plugin: {(result.stderr.strip().splitlines() or ['?'])[0]}")
    partial.replace(plugin)


if __name__ == "__main__":
    from runtime.errors import run_cli

    run_cli(lambda: print(build_plugin()))
