"""The bundle on disk: its file names and its typed manifest, for the tools that write and inspect bundles.

Verifying a bundle before it runs (signature, sha256 of every file, architecture, CPU features) is the native
core's job (runtime/native/edgevit.cc), for every runtime; here the manifest is read as the typed record that
compile writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import EdgevitError

if TYPE_CHECKING:  # the binding imports this module for its names; hashlib (OpenSSL) and dataclasses load on use
    from runtime.manifest import Manifest

MANIFEST = "manifest.json"
LIBRARY = "model.so"
LABELS = "labels.txt"
CORE = "lib/libedgevit.so"  # the native core of every bundle (C API: runtime/native/edgevit.h)
RUNNER = "bin/edgevit-run"  # the thin native program on it
RUNTIMES = ("native", "python")  # how a board runs a bundle: RUNNER, or python -m runtime (the binding)


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (the digest the manifest lists and the core checks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> Manifest:
    """The manifest of a bundle directory, with its schema checked."""
    from runtime.manifest import Manifest

    try:
        data = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise EdgevitError(f"{path} is not an edgevit bundle (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgevitError(f"bundle {path}: {MANIFEST} is corrupt ({err})") from None
    return Manifest.from_dict(data, where=f"bundle {path}")


def verified_manifest(path: Path) -> Manifest:
    """The manifest of a bundle whose listed files all exist with their sha256: what a host checks before copying
    a bundle to a board (the board's core checks it again, with the signature, before running it)."""
    if not path.is_dir():
        raise EdgevitError(f"bundle not found: {path}" if not path.exists() else f"bundle {path} is not a directory")
    manifest = read_manifest(path)
    for name, expected in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise EdgevitError(f"bundle {path}: {name} is missing")
        if sha256_file(file) != expected:
            raise EdgevitError(f"bundle {path}: {name} is corrupt or truncated (sha256 mismatch)")
    return manifest
