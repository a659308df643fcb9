"""The contenders `results arm` counts, each on the emulated board with the same image, batch 1, one thread.

edgevit bundles run in count-runner (results/arm/count_runner.c, built once on edgevit.h); peers are
prepared on this machine from the same model and weights (results.peers.prepare: LiteRT INT8 through
litert-torch's PT2E, the ONNX Runtime INT8 recipes) and run by the board's python (peer_runner.py) with
their aarch64 wheels. Every contender runs in the board root (results/arm/sysroot.py) under the same
qemu CPU, plugin and /proc/cpuinfo, so XNNPACK, MLAS and TVM take the board's code paths.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compile.cache import edgevit_cache_dir
from results.arm.boards import ArmBoard
from results.arm.count import InferenceCount, Kernel, run_counted
from results.arm.symbols import OUTLINED, AddressMap
from results.peers.runners import Artifact
from runtime.errors import EdgevitError

RUNNER_SOURCE = Path(__file__).with_name("count_runner.c")
PEER_RUNNER = Path(__file__).with_name("peer_runner.py")
# peer name -> the results.peers.prepare peers it is the best of (fewest instructions per inference)
PEERS = {"litert-int8": ("litert-int8",),
         "onnxruntime-int8": ("onnxruntime-int8-static", "onnxruntime-int8-static-qdq", "onnxruntime-int8-dynamic")}
DEFAULT_PEERS = tuple(PEERS)
# Which functions a contender's thread pool splits (results/arm/estimate.py): TVM's outlined parallel loops;
# XNNPACK's operators (its microkernels, named xnn_*); ONNX Runtime's core (linked into its Python module) is
# stripped, so all of it (an upper bound on its speed-up).
PARALLEL: dict[str, Callable[[Kernel], bool]] = {
    "edgevit": lambda k: k.library == "model.so" and k.name.endswith(OUTLINED),
    "litert": lambda k: k.name.startswith("xnn_"),
    "onnxruntime": lambda k: k.library.startswith(("libonnxruntime", "onnxruntime_pybind11_state")),
}


@dataclass(frozen=True)
class Board:
    """Where contenders are counted: the board, its root for qemu -L, and the inference settings."""

    board: ArmBoard
    root: Path
    warmup: int
    repeat: int


@dataclass(frozen=True)
class Counted:
    """One contender's instructions per inference."""

    name: str
    kind: str  # edgevit | litert | onnxruntime
    count: InferenceCount
    macs: float  # multiply-accumulates per inference
    top1: int | None
    details: dict = field(default_factory=dict)


def count_runner() -> Path:
    """count-runner for aarch64, cross-compiled once per source and toolchain into the cache."""
    from compile.native import compile_program, cross_toolchain

    toolchain = cross_toolchain("aarch64", "aarch64-linux-gnu-g++")
    digest = hashlib.sha256(toolchain.digest().encode() + RUNNER_SOURCE.read_bytes()).hexdigest()[:16]
    runner = edgevit_cache_dir() / "arm-counter" / f"count-runner-{digest}"
    if not runner.is_file():
        runner.parent.mkdir(parents=True, exist_ok=True)
        partial = runner.with_name(f".{runner.name}.{id(runner)}")
        compile_program(toolchain, partial, RUNNER_SOURCE)
        partial.replace(runner)
    return runner


def check_bundle(path: Path, board: ArmBoard) -> Artifact:
    """A verified bundle that runs on `board`'s CPU and carries its runtime libraries, else one line why."""
    from results.peers.edgevit_contenders import bundle_artifact
    from runtime.bundle import read_manifest

    target = read_manifest(path).target
    if target.arch != "aarch64" or target.device != "cpu":
        raise EdgevitError(f"bundle {path} is for {target.arch} {target.device} (target {target.preset}), "
                           "not an aarch64 CPU: compile it with --target rpi5, rpi4 or aarch64")
    features = set(next(line for line in board.cpuinfo.splitlines() if line.startswith("Features")).split(":")[1].split())
    missing = sorted(set(target.required_cpu_features) - features)
    if missing:
        raise EdgevitError(f"bundle {path} (target {target.preset}) needs {', '.join(missing)}, which {board.preset} "
                           "lacks")
    if not (path / "lib" / "libedgevit.so").is_file():
        raise EdgevitError(f"bundle {path} has no native core lib/libedgevit.so (made before every bundle carried "
                           "one): compile it again")
    return bundle_artifact(path, read_manifest(path).model.name)


def _top1(stdout: str) -> int | None:
    return json.loads(stdout.strip().splitlines()[-1])["top1"]


def count_bundle(artifact: Artifact, where: Board, image: Path) -> Counted:
    """A checked edgevit bundle's (check_bundle) instructions per inference on `image`."""
    bundle = Path(artifact.path).resolve()
    report, stdout = run_counted(
        [str(count_runner()), str(bundle), str(image.resolve()), str(where.warmup), str(where.repeat)],
        cpu=where.board.qemu_cpu, sysroot=where.root, env={"LD_LIBRARY_PATH": str(bundle / "lib")})
    return Counted(artifact.name, "edgevit", InferenceCount.from_report(report, AddressMap(report.mappings, where.root)),
                   artifact.recipe["gflops"] / 2 * 1e9, _top1(stdout), {**artifact.recipe, "windows": report.windows})


def count_peer(artifact: Artifact, where: Board, batch: np.ndarray, peer_site: Path, macs: float) -> Counted:
    """A prepared peer's instructions per inference on `batch` ([1, 3, H, W] float32), in the board's python."""
    from results.arm.sysroot import PYTHON

    with tempfile.TemporaryDirectory(prefix="edgevit-arm-peer-") as tmp:
        np.save(Path(tmp) / "input.npy", batch)
        report, stdout = run_counted(
            [str(where.root / PYTHON.lstrip("/")), str(PEER_RUNNER), artifact.kind, str(Path(artifact.path).resolve()),
             str(Path(tmp) / "input.npy"), str(where.warmup), str(where.repeat)],
            cpu=where.board.qemu_cpu, sysroot=where.root,
            env={"PYTHONPATH": str(peer_site), "HOME": tmp, "PYTHONDONTWRITEBYTECODE": "1"})
    return Counted(artifact.name, artifact.kind, InferenceCount.from_report(report, AddressMap(report.mappings, where.root)),
                   macs, _top1(stdout), {**artifact.recipe, "windows": report.windows})


def prepare_peers(names: tuple[str, ...], model: str, weights: Path, work_dir: Path, calib_count: int,
                  log: Callable[[str], None]) -> dict[str, list[Artifact]]:
    """Each peer name's prepared artifacts (its recipes), made once in work_dir and reused by later runs."""
    from results.peers.prepare import PeerContext, Unavailable, prepare_peer

    context = PeerContext(model, work_dir, calib_count, weights)
    prepared: dict[str, list[Artifact]] = {}
    for name in names:
        prepared[name] = []
        for recipe in PEERS[name]:
            record = work_dir / f"{recipe}.artifact.json"
            if record.is_file():
                prepared[name].append(Artifact.from_json(record.read_text()))
                continue
            log(f"prepare {recipe}")
            artifact = prepare_peer(recipe, context)
            if isinstance(artifact, Unavailable):
                raise EdgevitError(f"peer {recipe}: {artifact.reason}")
            record.write_text(artifact.to_json())
            prepared[name].append(artifact)
    return prepared
