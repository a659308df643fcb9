"""`python -m results arm`: instructions per inference of bundles and peers on an emulated board, in one run.

Phases: check everything that can be refused (board, bundles, emulator, peer names) before any heavy
work; build what is cached (counter plugin, count-runner, board root, peer wheels); prepare the peers from
the bundles' model and weights; count every contender on the same evaluation image; one record each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from results.arm.boards import arm_board
from results.arm.contenders import DEFAULT_PEERS, PEERS, Board, Counted, check_bundle, count_bundle, count_peer
from results.arm.plugin import build_plugin
from results.arm.report import record
from runtime.errors import EdgevitError


@dataclass(frozen=True)
class ArmArgs:
    bundles: tuple[Path, ...]
    board: str  # a preset with a counting model (results/arm/boards.py)
    peers: tuple[str, ...] = DEFAULT_PEERS
    build_dir: Path = Path("build/arm")  # prepared peers
    warmup: int = 2  # the second inference still runs ~1,100 instructions more than later ones
    repeat: int = 2  # marked inferences per contender
    calib_images: int = 128
    gemm_shapes: bool = False  # also count the first bundle's int8 GEMM shapes alone (results/arm/gemm_shapes.py)

    def __post_init__(self):
        if not self.bundles:
            raise EdgevitError("give at least one bundle to count")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise EdgevitError(f"unknown peer '{unknown[0]}'; peers: {', '.join(PEERS)}")
        if self.warmup < 0 or self.repeat < 1:
            raise EdgevitError("--warmup must be at least 0 and --repeat at least 1")


def _board_root(board) -> Path:
    """The board's root, or one line naming the tool that is missing to build it."""
    import shutil

    from compile.cache import edgevit_cache_dir
    from results.arm.sysroot import board_root

    for tool, package in (("debootstrap", "debootstrap"), ("dpkg-deb", "dpkg")):
        if shutil.which(tool) is None:
            raise EdgevitError(f"{tool} not found (it builds the emulated board's arm64 sysroot): apt-get install {package}")
    try:
        return board_root(edgevit_cache_dir(), board.preset, board.cpuinfo)
    except RuntimeError as err:
        raise EdgevitError(f"cannot build the arm64 sysroot: {str(err).splitlines()[0]}") from None


def _peer_site() -> Path:
    from compile.cache import edgevit_cache_dir
    from results.arm.sysroot import peer_site

    try:
        return peer_site(edgevit_cache_dir())
    except RuntimeError as err:
        raise EdgevitError(f"cannot fetch the peers' aarch64 wheels: {str(err).splitlines()[0]}") from None


def run_arm(args: ArmArgs, log) -> list[dict]:
    """One record per contender: the bundles in order, then each peer (its best recipe)."""
    from compile.data import evaluation_rows, labelled_images

    board = arm_board(args.board)
    artifacts = [check_bundle(path, board) for path in args.bundles]
    models = {a.model for a in artifacts}
    if args.peers and len(models) > 1:
        raise EdgevitError(f"peers need one model, the bundles hold {', '.join(sorted(models))}")
    build_plugin()
    where = Board(board, _board_root(board), args.warmup, args.repeat)
    image = labelled_images() / "images" / evaluation_rows(1)[0][0]
    counted: list[Counted] = []
    for artifact in artifacts:
        log(f"count {artifact.name} ({artifact.path}) on {board.qemu_cpu}")
        counted.append(count_bundle(artifact, where, image))
    if args.peers:
        counted += _count_peers(args, next(iter(models)), where, image, log)
    records = [record(c, board) for c in counted]
    if args.gemm_shapes:
        records[0]["gemm_shapes"] = _gemm_shapes(artifacts[0], where, log)
    return records


def _gemm_shapes(artifact, where: Board, log) -> list[dict]:
    from results.arm.gemm_shapes import count_gemm_shapes, vit_gemm_shapes
    from runtime.bundle import read_manifest

    manifest = read_manifest(Path(artifact.path))
    if manifest.quant.mode == "fp32":
        raise EdgevitError(f"--gemm-shapes counts int8 GEMMs: the first bundle, {artifact.path}, is fp32")
    log(f"count the int8 GEMM shapes of {manifest.model.name} on {where.board.qemu_cpu}")
    return count_gemm_shapes(vit_gemm_shapes(manifest), where.board, where.root)


def _count_peers(args: ArmArgs, model: str, where: Board, image: Path, log) -> list[Counted]:
    from compile.model.models import load_model
    from compile.model.vit import describe
    from results.arm.contenders import prepare_peers
    from results.model_weights import model_weights
    from results.peers.inputs import model_preprocess

    site = _peer_site()
    weights = model_weights(model, args.build_dir)
    timm_model = load_model(model, weights.path)
    macs = describe(timm_model, [0] * len(timm_model.blocks)).gflops() / 2 * 1e9
    batch = model_preprocess(model).load(image)[None]
    prepared = prepare_peers(args.peers, model, weights.path, args.build_dir / f"{model}-calib{args.calib_images}",
                             args.calib_images, log)
    best = []
    for name, artifacts in prepared.items():
        recipes = []
        for artifact in artifacts:
            log(f"count {artifact.name} on {where.board.qemu_cpu}")
            recipes.append(count_peer(artifact, where, batch, site, macs))
        winner = min(recipes, key=lambda c: c.count.instructions)
        others = {c.name: round(c.count.instructions) for c in recipes}
        best.append(Counted(name, winner.kind, winner.count, macs, winner.top1,
                            {**winner.details, "recipe": winner.name, "recipes_instructions": others}))
    return best
