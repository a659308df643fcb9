"""edgevit's own contenders: bundles given on the command line or compiled here (mode x ToMe r) for one preset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from results.peers.prepare import Unavailable
from results.peers.runners import Artifact
from runtime.errors import EdgevitError


def bundle_artifact(path: Path, model: str) -> Artifact:
    """A verified bundle of `model`, named by its quantization mode and ToMe schedule (edgevit-int8-tome8)."""
    from runtime.bundle import verified_manifest

    manifest = verified_manifest(path)
    if manifest.model.name != model:
        raise EdgevitError(f"bundle {path} is of {manifest.model.name}, not {model}: "
                           "contenders must share one model (pass --model)")
    schedule = manifest.tome.schedule
    mode = manifest.quant.mode
    tome = "" if not any(schedule) else f"-tome{schedule[0]}" if len(set(schedule)) == 1 else f"-tome{sum(schedule)}tok"
    return Artifact(f"edgevit-{mode}{tome}", "edgevit", path, model, {
        "quant": mode, "input_dtype": manifest.input.dtype, "tome_schedule": schedule,
        "gflops": manifest.tome.gflops, "target": manifest.target.preset, "bundle": str(path),
    }, device=manifest.target.device)


def check_build_request(model: str, modes: tuple[str, ...], tome_rs: tuple[int, ...]) -> None:
    """Refuse an unknown mode or an r the model cannot merge before anything is prepared."""
    from compile.model.models import load_model
    from compile.model.tome_patch import num_tokens
    from compile.model.tome_schedule import parse_tome_r
    from compile.quant.config import QUANT_MODES

    for mode in modes:
        if mode not in QUANT_MODES:
            raise EdgevitError(f"unknown edgevit mode '{mode}'; available: {', '.join(QUANT_MODES)}")
    if modes:
        timm_model = load_model(model, pretrained_required=False)
        for r in tome_rs:
            parse_tome_r(r, len(timm_model.blocks), num_tokens(timm_model), timm_model.num_prefix_tokens)


def build_bundles(model: str, modes: tuple[str, ...], tome_rs: tuple[int, ...], build_dir: Path, calib_count: int,
                  log: Callable[[str], None], weights: Path | None = None,
                  target: str = "host") -> list[Artifact | Unavailable]:
    """Compile a bundle for preset `target` for every (mode, r) from `weights` (None: the stored ones); a mode the
    compiler refuses is reported, not fatal."""
    from compile.pipeline import CompileArgs, bundle_name, compile_bundle
    from compile.quant.config import QuantConfig

    built: list[Artifact | Unavailable] = []
    for mode in modes:
        for r in tome_rs:
            out = build_dir / bundle_name(model, target, mode, str(r))
            log(f"compile edgevit {mode}, ToMe r={r} -> {out}")
            try:
                quant = QuantConfig(mode=mode, calib_count=calib_count)
                path = compile_bundle(CompileArgs(target=target, model=model, weights=weights, quant=quant, tome_r=str(r),
                                                  out=out),
                                      log=lambda m: log("  " + m))
            except (EdgevitError, NotImplementedError) as err:
                built.append(Unavailable(f"edgevit-{mode}" + (f"-tome{r}" if r else ""), f"compile failed: {err}"))
                continue
            built.append(bundle_artifact(path, model))
    return built
