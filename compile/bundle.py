"""Writing a bundle directory atomically: everything goes into a temp directory that is renamed last.

The manifest (runtime.manifest, schema in docs/manifest.md) records what the runtime checks (sha256
of every file, architecture, CPU features) and what a reader needs to reproduce the build.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from runtime.bundle import LABELS, LIBRARY, MANIFEST, sha256_file
from runtime.manifest import Manifest
from runtime.signing import PrivateKey, sign_bundle


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temp directory beside `out` that replaces `out` only if the block finishes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(old / "bundle")
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_bundle(
    out: Path,
    write_library: Callable[[Path], dict[str, bytes]],
    labels: list[str],
    manifest: Manifest,
    add_core: Callable[[Path], list[str]],
    signing_key: PrivateKey | None = None,
) -> Path:
    """Create bundle `out`: model.so (via `write_library`, which returns any further files such as
    device kernels), labels.txt, the native core, its runner and libraries (via `add_core`, which writes them
    into the bundle directory and returns their names), then manifest.json with the sha256 of every file,
    and with `signing_key` its signature manifest.json.sig (before the rename: never a bundle without it)."""
    with staging_dir(out) as tmp:
        extra_files = write_library(tmp / LIBRARY)
        (tmp / LABELS).write_text("".join(f"{name}\n" for name in labels))  # empty for a features bundle
        for name, data in extra_files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        runner_files = add_core(tmp)
        names = (LIBRARY, LABELS, *sorted(extra_files), *sorted(runner_files))
        files = {name: sha256_file(tmp / name) for name in names}
        (tmp / MANIFEST).write_text(dataclasses.replace(manifest, files=files).to_json())
        if signing_key is not None:
            sign_bundle(tmp, signing_key)
    return out
