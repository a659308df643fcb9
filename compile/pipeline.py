"""The compile flow as its list of phases: model -> (ToMe) -> Relax -> build -> bundle.

`compile_bundle(CompileArgs)` is what `python -m compile` calls; each phase is a function of its
own module, and `--dump-ir DIR` writes the Relax module between phases.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from compile.tuning.settings import TuneSettings
from runtime.errors import EdgevitError

QUANT_MODES = ("fp32", "int8", "int8-full")
OBSERVERS = ("minmax", "percentile", "mse")


@dataclass(frozen=True)
class CompileArgs:
    """Everything one compile needs, validated before any heavy work starts."""

    target: str = "host"
    model: str = "deit_tiny_patch16_224"
    weights: Path | None = None
    quant: str = "fp32"
    tome_r: str = "0"  # constant r, a comma list per block, or "R:decrease" (compile.tome_patch.parse_tome_r)
    out: Path | None = None
    random_init: bool = False  # no weights needed: for tests of architectures without local weights
    dump_ir: Path | None = None
    # post-training quantization (--quant int8 / int8-full); see compile.quant
    calib_images: Path | None = None  # folder of calibration images; None: the data directory's calibration split
    calib_count: int = 256
    observer: str = "mse"  # activation ranges: minmax | percentile | mse
    outliers: bool = True  # per-channel LayerNorm output scales folded into the next weights
    fc2_groups: int = 1  # power-of-two channel groups for fc2 inputs (Tender); 1: off
    weight_scales: str = "channel"  # channel | tensor (tensor: the naive baseline)
    keep_float: int = 0  # keep the K most quantization-sensitive layers in float
    keep_float_error: float | None = None  # ... or every layer whose relative error exceeds this
    # MetaSchedule: trials to tune before building (0: use the shipped database as it is)
    tuning: TuneSettings = TuneSettings()


def default_out_dir(args: CompileArgs, preset_name: str) -> Path:
    """build/<model>-<target>-<quant>[-tome<r>], relative to the working directory."""
    tome = "" if args.tome_r.strip() in ("", "0") else "-tome" + args.tome_r.replace(",", "_").replace(":", "-")
    return Path("build") / f"{args.model}-{preset_name}-{args.quant}{tome}"


def _labels(num_classes: int) -> list[str]:
    """ImageNet class names from the data directory for 1000-class models, else class_<i>."""
    from compile.models import data_dir

    names = data_dir() / "imagenet_classes.txt"
    if num_classes == 1000 and names.is_file():
        return names.read_text().splitlines()
    return [f"class_{i}" for i in range(num_classes)]


def _versions() -> dict[str, str]:
    import timm
    import torch
    import tvm

    import runtime

    return {"edgevit": runtime.__version__, "tvm": tvm.__version__, "torch": torch.__version__, "timm": timm.__version__}


def quant_config(args: CompileArgs):
    """The QuantConfig of an integer mode (validated here, before any heavy work), None for fp32."""
    if args.quant not in QUANT_MODES:
        raise EdgevitError(f"unknown quantization mode '{args.quant}'; available: {', '.join(QUANT_MODES)}")
    if args.quant == "fp32":
        return None
    from compile.quant.config import QuantConfig

    return QuantConfig(
        mode=args.quant, calib_images=args.calib_images, calib_count=args.calib_count, observer=args.observer,
        outliers=args.outliers, fc2_groups=args.fc2_groups, weight_scales=args.weight_scales,
        keep_float=args.keep_float, keep_float_error=args.keep_float_error,
    )


def compile_bundle(args: CompileArgs, log=print) -> Path:
    """Compile one model for one target preset and write its bundle; returns the bundle path."""
    from compile.models import load_model, model_spec
    from targets import load_preset

    preset = load_preset(args.target)
    spec = model_spec(args.model)
    config = quant_config(args)
    out = args.out or default_out_dir(args, preset.name)
    from compile.build import check_toolchain

    check_toolchain(preset)

    log(f"[1/4] loading {args.model}")
    model = load_model(args.model, args.weights, pretrained_required=not args.random_init)
    input_shape = (1, 3, spec.image_size, spec.image_size)

    from compile.tome import token_counts
    from compile.tome_patch import apply_tome, gflops, num_tokens, parse_tome_r

    depth = len(model.blocks)
    schedule = parse_tome_r(args.tome_r, depth, num_tokens(model), model.num_prefix_tokens)
    if any(schedule):
        log(f"      ToMe: merging {sum(schedule)} tokens over {len(schedule)} blocks {schedule}")
    flops = gflops(model, schedule)
    if config is None:
        if any(schedule):
            apply_tome(model, schedule)
        log("[2/4] torch.export -> Relax")
        from compile.relax_import import to_relax

        mod = to_relax(model, input_shape)
        quant = {"mode": "fp32", "layers": {}}
    else:
        from compile.quant import emit_relax, quantize
        from compile.quant.sensitivity import layer_report

        log(f"[2/4] post-training quantization ({args.quant}) -> integer Relax graph")
        qvit = quantize(model, spec, schedule, config, log)
        mod = emit_relax(qvit, preset.target())
        quant = {"mode": args.quant, "recipe": qvit.recipe, "layers": layer_report(qvit.linears())}
    _dump(args.dump_ir, "relax_import", mod)
    if args.tuning.trials:
        from compile.tuning.tune import tune_model

        tune_model(mod, preset, args.tuning, log=log)

    log(f"[3/4] building for {preset.name} ({preset.tvm_target.get('mcpu', preset.tvm_target.get('arch'))})")
    from compile.build import build_library
    from compile.bundle import write_bundle

    manifest = {
        "model": {"name": args.model, "num_classes": model.num_classes, "embed_dim": model.embed_dim,
                  "depth": depth},
        "input": {
            # integer bundles take uint8 pixels: mean / std are folded into the patch embedding
            "shape": list(input_shape), "dtype": "float32" if config is None else "uint8", "layout": "NCHW",
            "mean": list(spec.mean), "std": list(spec.std),
            "resize": int(spec.image_size / spec.crop_pct), "crop_pct": spec.crop_pct,
            "interpolation": spec.interpolation,
        },
        "tome": {
            "schedule": schedule, "tokens_per_block": token_counts(schedule, num_tokens(model)),
            "gflops": round(flops, 4),
        },
        "quant": quant,
        "target": {
            "preset": preset.name, "tvm_target": preset.tvm_target, "arch": preset.arch,
            "device": preset.device, "required_cpu_features": list(preset.required_cpu_features),
        },
        "versions": _versions(),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    log(f"[4/4] writing bundle {out}")
    return write_bundle(out, lambda path: build_library(mod, preset, path, args.tuning.database_dir),
                        _labels(model.num_classes), manifest)


def _dump(directory: Path | None, phase: str, mod) -> None:
    """Write the IR after a phase when --dump-ir is given."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{phase}.py").write_text(mod.script())
