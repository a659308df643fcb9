"""The bundle on disk: model.so + manifest.json + labels.txt, and the checks done before loading it.

A bundle is refused (EdgevitError, one line) when a file is missing or its sha256 differs from the
manifest, when it was built for another architecture, or when this CPU lacks a feature the code
was compiled to use (checked here, before loading, so the answer is a message and not SIGILL).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtime.cpu_features import cpu_features, machine_arch
from runtime.errors import EdgevitError
from runtime.manifest import Manifest

MANIFEST = "manifest.json"
LIBRARY = "model.so"
LABELS = "labels.txt"
RUNNER = "bin/edgevit-run"  # the native runner of a self-contained bundle (with its libraries in lib/)
RUNTIMES = ("native", "python")  # how a board runs a bundle: RUNNER, or python -m runtime


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle directory and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def library(self) -> Path:
        return self.path / LIBRARY

    @property
    def device(self) -> str:
        return self.manifest.target.device

    def labels(self) -> list[str]:
        return (self.path / LABELS).read_text().splitlines()


def _unpack_tar(path: Path) -> Path:
    """A .tar bundle is unpacked into a temporary directory (kept for the life of the process)."""
    out = Path(tempfile.mkdtemp(prefix="edgevit-bundle-"))
    try:
        with tarfile.open(path) as tar:
            tar.extractall(out, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise EdgevitError(f"bundle {path}: not a bundle directory or a readable tar archive ({type(err).__name__})") from None
    entries = [p for p in out.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else out


def read_manifest(path: Path) -> Manifest:
    """The manifest of a bundle directory, with its schema checked."""
    try:
        data = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise EdgevitError(f"{path} is not an edgevit bundle (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgevitError(f"bundle {path}: {MANIFEST} is corrupt ({err})") from None
    return Manifest.from_dict(data, where=f"bundle {path}")


def verify_files(path: Path, manifest: Manifest) -> None:
    """Every file the manifest lists exists and has the recorded sha256."""
    for name, expected in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise EdgevitError(f"bundle {path}: {name} is missing")
        if sha256_file(file) != expected:
            raise EdgevitError(f"bundle {path}: {name} is corrupt or truncated (sha256 mismatch)")


def verify_device(path: Path, manifest: Manifest) -> None:
    """The bundle's architecture and required CPU features match this machine."""
    target = manifest.target
    arch = machine_arch()
    if target.arch != arch:
        raise EdgevitError(
            f"bundle {path} was built for {target.arch} (target {target.preset}); this machine is {arch}"
        )
    missing = sorted(set(target.required_cpu_features) - cpu_features())
    if missing:
        raise EdgevitError(
            f"bundle {path} (target {target.preset}) needs CPU feature(s) {', '.join(missing)} "
            "that this CPU does not have; compile for a matching target (e.g. rpi4 or aarch64 instead of rpi5)"
        )


def open_bundle(path: str | Path, *, check_device: bool = True) -> Bundle:
    """Open and verify a bundle directory or .tar before any of its code is loaded."""
    path = Path(path)
    if not path.exists():
        raise EdgevitError(f"bundle not found: {path}")
    if path.is_file():
        path = _unpack_tar(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    if check_device:
        verify_device(path, manifest)
    return Bundle(path, manifest)
