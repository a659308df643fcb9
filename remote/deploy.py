"""Deploy: copy the runtime package (only what a board needs) and a bundle to a board, skipping unchanged files."""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass
from pathlib import Path

from remote.inventory import Board
from remote.ssh import TMP_SUFFIX, BoardConnection
from runtime.bundle import CORE, read_manifest, sha256_file, verified_manifest
from runtime.errors import EdgevitError
from runtime.signing import SIGNATURE, read_trust_store, verify_bundle

RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"


@dataclass(frozen=True)
class DeployResult:
    board: str
    uploaded: tuple[str, ...]
    unchanged: tuple[str, ...]
    remote_bundle: str | None


def runtime_files() -> dict[str, Path]:
    """The runtime as it goes onto a board: its Python modules (the binding; the core comes with each bundle) and its
    requirements (numpy), nothing else."""
    files = {f"runtime/{p.name}": p for p in sorted(RUNTIME_DIR.glob("*.py"))}
    files["runtime/requirements.txt"] = RUNTIME_DIR / "requirements.txt"
    return files


def bundle_files(bundle: Path) -> dict[str, Path]:
    """Every file of a bundle by its name in the manifest, plus the manifest itself and its signature if any."""
    manifest = read_manifest(bundle)
    names = [*manifest.files, "manifest.json", *([SIGNATURE] if (bundle / SIGNATURE).is_file() else [])]
    return {f"bundles/{bundle.name}/{name}": bundle / name for name in names}


def check_signed(board: Board, bundle: Path) -> None:
    """A board that requires signed bundles gets only one signed by a key of its trust store, every file as
    its manifest lists it; refused before anything is uploaded, naming the board."""
    if not board.require_signed:
        return
    try:
        verify_bundle(bundle, read_trust_store(board.trusted_keys))
        verified_manifest(bundle)
    except EdgevitError as err:
        raise EdgevitError(f"board {board.name} requires signed bundles: {err}") from None


def local_sha256(path: Path) -> str:
    """sha256 of a local file, hashed once while it stays unchanged: a farm sends the same bundle to every board."""
    stat = path.stat()
    return _sha256_of_version(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _sha256_of_version(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def sync(conn: BoardConnection, files: dict[str, Path]) -> tuple[list[str], list[str]]:
    """Upload files (remote path relative to the board's remote_dir) whose sha256 differs."""
    root = conn.board.remote_dir
    remote = {posixpath.join(root, name): local for name, local in files.items()}
    dirs = sorted({posixpath.dirname(path) for path in remote})
    conn.check(["mkdir", "-p", "--", *dirs])
    conn.run(["find", root, "-name", f"*{TMP_SUFFIX}", "-delete"])  # leftovers of a cut transfer
    existing = conn.remote_sha256(list(remote))
    uploaded, unchanged = [], []
    for path, local in remote.items():
        digest = local_sha256(local)
        if existing.get(path) == digest:
            unchanged.append(path)
        else:
            conn.put_atomic(local, path, digest)
            uploaded.append(path)
    return uploaded, unchanged


def needs_python(bundle: Path | None, runtime: str) -> bool:
    """Whether the board needs the Python runtime package (the binding, pure Python: no pip on the board): with
    `--runtime python` or without a bundle. Either way the bundle must carry its native core."""
    if bundle is not None and CORE not in read_manifest(bundle).files:
        raise EdgevitError(f"bundle {bundle} has no native core ({CORE}); rebuild it with this edgevit")
    return bundle is None or runtime == "python"


def deploy(conn: BoardConnection, bundle: Path | None = None, runtime: str = "native") -> DeployResult:
    """The bundle (self-contained: its native core, runner and libraries), plus the Python runtime package when
    `runtime` is "python" or there is no bundle; returns what moved and where the bundle lives there."""
    files = runtime_files() if needs_python(bundle, runtime) else {}
    if bundle is not None:
        check_signed(conn.board, bundle)
        files.update(bundle_files(bundle))
    uploaded, unchanged = sync(conn, files)
    remote_bundle = f"bundles/{bundle.name}" if bundle is not None else None
    return DeployResult(conn.board.name, tuple(uploaded), tuple(unchanged), remote_bundle)
