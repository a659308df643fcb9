"""The compile flow as its list of phases: model -> (ToMe) -> Relax -> build -> bundle.

`compile_bundle(CompileArgs)` is what `python -m compile` calls; each phase is a function of its
own module, and `--dump-ir DIR` writes the Relax module between phases.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from compile.quant.config import QuantConfig
from compile.tuning.settings import TuneSettings
from runtime.errors import EdgevitError
from runtime.manifest import Manifest, ModelInfo, QuantInfo, TargetInfo, TomeInfo


@dataclass(frozen=True)
class Preprocessing:
    """--image-size, --mean, --std, --crop-pct, --interpolation: each None keeps timm's value for the model."""

    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None

    def given(self) -> dict:
        """The values set by the user (the others stay as the checkpoint's or timm's config has them)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class CompileArgs:
    """Everything one compile needs, validated before any heavy work starts."""

    target: str = "host"
    model: str | None = None  # timm name; None: the weights folder's architecture, else deit_tiny_patch16_224
    weights: Path | None = None  # safetensors, or a PyTorch state dict / training checkpoint (compile.checkpoint)
    labels: Path | None = None  # class names, one per line; None: ImageNet's for 1000 classes, else class_<i>
    output: str = "logits"  # logits | features: the pooled pre-logits embedding, without the head
    preprocessing: Preprocessing = Preprocessing()  # input size, mean / std, ... (None: timm's config for the model)
    tome_r: str = "0"  # constant r, a comma list per block, or "R:decrease" (compile.tome_patch.parse_tome_r)
    out: Path | None = None
    random_init: bool = False  # no weights needed: for tests of architectures without local weights
    dump_ir: Path | None = None
    native: bool = True  # put the native runner and the TVM runtime libraries into the bundle (self-contained)
    quant: QuantConfig = QuantConfig()  # fp32, or the post-training quantization recipe (compile.quant)
    # MetaSchedule: trials to tune before building (0: use the shipped database as it is)
    tuning: TuneSettings = TuneSettings()


def default_out_dir(model: str, args: CompileArgs, preset_name: str) -> Path:
    """build/<model>-<target>-<quant>[-tome<r>][-features], relative to the working directory."""
    tome = "" if args.tome_r.strip() in ("", "0") else "-tome" + args.tome_r.replace(",", "_").replace(":", "-")
    features = "-features" if args.output == "features" else ""
    return Path("build") / f"{model}-{preset_name}-{args.quant.mode}{tome}{features}"


def class_names(num_classes: int, labels_file: Path | None, config_names: list[str] | None = None) -> list[str]:
    """labels.txt of the bundle: --labels FILE (one name per line), else the weights folder's label names,
    else ImageNet's names for 1000-class models, else class_<i>. A count that is not the head's is refused."""
    from compile.data import data_dir

    names = config_names or None  # an empty label list in a config names nothing
    if labels_file is not None:
        try:
            names = [line.strip() for line in Path(labels_file).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise EdgevitError(f"labels file {labels_file}: cannot read it ({err.__class__.__name__})") from None
    if names is not None:
        source = f"labels file {labels_file}" if labels_file is not None else "config.json"
        if len(names) != num_classes:
            raise EdgevitError(f"{source} names {len(names)} classes; the model's head has {num_classes}")
        return list(names)
    imagenet = data_dir() / "imagenet_classes.txt"
    if num_classes == 1000 and imagenet.is_file():
        return imagenet.read_text().splitlines()
    return [f"class_{i}" for i in range(num_classes)]


def _versions() -> dict[str, str]:
    import timm
    import torch
    import tvm

    import runtime

    return {"edgevit": runtime.__version__, "tvm": tvm.__version__, "torch": torch.__version__, "timm": timm.__version__}


def compile_bundle(args: CompileArgs, log=print) -> Path:
    """Compile one model for one target preset and write its bundle; returns the bundle path."""
    from compile.models import DEFAULT_MODEL, OUTPUTS, build_model, find_checkpoint, model_spec
    from targets import load_preset

    if args.output not in OUTPUTS:
        raise EdgevitError(f"--output {args.output}: expected one of {', '.join(OUTPUTS)}")
    if args.output == "features" and args.labels is not None:
        raise EdgevitError("--labels names classes; a --output features bundle has none (it returns the embedding)")
    preset = load_preset(args.target)
    config = args.quant
    from compile.quant.formats import offered_formats

    formats = offered_formats(config, preset)
    checkpoint = find_checkpoint(args.model or DEFAULT_MODEL, args.weights)
    name = args.model or (checkpoint.architecture if checkpoint else None) or DEFAULT_MODEL
    found = checkpoint.preprocessing if checkpoint else {}
    if args.model and checkpoint and checkpoint.architecture not in (None, args.model):
        raise EdgevitError(f"--weights {args.weights} holds {checkpoint.architecture}, not --model {args.model}")
    spec = model_spec(name, **{**found, **args.preprocessing.given()})
    out = args.out or default_out_dir(name, args, preset.name)
    from compile.build import check_toolchain

    check_toolchain(preset)
    native = None
    if args.native:
        from compile.native import toolchain_for

        native = toolchain_for(preset)

    log(f"[1/4] loading {name}")
    if checkpoint is not None:
        log(f"      weights: {checkpoint.source} ({checkpoint.num_classes} classes)")
    model = build_model(spec, checkpoint, pretrained_required=not args.random_init, output=args.output)
    labels = [] if args.output == "features" else class_names(model.num_classes, args.labels,
                                                                checkpoint.label_names if checkpoint else None)
    if args.output == "features":
        log(f"      output: the pooled pre-logits embedding ({model.num_features} values), no head")
    if config.is_integer:
        from compile.architecture import int8_unsupported

        problem = int8_unsupported(model)
        if problem is not None:
            raise EdgevitError(f"--quant {config.mode} for {name}: the integer graph does not handle its {problem} "
                               "yet; compile it with --quant fp32")

    from compile.tome import token_counts
    from compile.tome_patch import apply_tome, gflops, num_tokens, parse_tome_r

    depth = len(model.blocks)
    schedule = parse_tome_r(args.tome_r, depth, num_tokens(model), model.num_prefix_tokens)
    if any(schedule):
        log(f"      ToMe: merging {sum(schedule)} tokens over {len(schedule)} blocks {schedule}")
    flops = gflops(model, schedule)
    if not config.is_integer:
        if any(schedule):
            apply_tome(model, schedule)
        log("[2/4] torch.export -> Relax")
        from compile.relax_import import to_relax

        mod = to_relax(model, (1, 3, spec.image_size, spec.image_size))
        quant = QuantInfo(mode="fp32")
    else:
        from compile.quant import emit_relax, quantize
        from compile.quant.sensitivity import layer_report

        log(f"[2/4] post-training quantization ({config.mode}) -> integer Relax graph")
        qvit = quantize(model, spec, schedule, config, log, formats)
        mod = emit_relax(qvit, preset.target())
        quant = QuantInfo(mode=config.mode, recipe=qvit.recipe, layers=layer_report(qvit.linears()))
    dump = IRDump(args.dump_ir)
    dump("imported", mod)
    if args.tuning.trials:
        from compile.tuning.tune import tune_model

        tune_model(mod, preset, args.tuning, log=log)

    log(f"[3/4] building for {preset.name} ({preset.tvm_target.get('mcpu', preset.tvm_target.get('arch'))})")
    from compile.build import build_library
    from compile.bundle import write_bundle

    manifest = Manifest(
        model=ModelInfo(name=name, num_classes=model.num_classes, embed_dim=model.embed_dim, depth=depth,
                        output=args.output),
        # integer bundles take uint8 pixels: mean / std are folded into the patch embedding
        input=spec.input_spec("uint8" if config.is_integer else "float32"),
        tome=TomeInfo(schedule=schedule, tokens_per_block=token_counts(schedule, num_tokens(model)),
                      gflops=round(flops, 4)),
        quant=quant,
        target=TargetInfo(preset=preset.name, tvm_target=preset.tvm_target, arch=preset.arch, device=preset.device,
                          required_cpu_features=list(preset.required_cpu_features)),
        versions=_versions(),
        created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    log(f"[4/4] writing bundle {out}" + (f" with bin/edgevit-run for {native.arch}" if native else ""))
    add_runner = None
    if native is not None:
        from compile.native import build_runner

        def add_runner(bundle_dir: Path) -> list[str]:
            return build_runner(bundle_dir, native, cuda=preset.device == "cuda")

    return write_bundle(out, lambda path: build_library(mod, preset, path, args.tuning.database_dir, dump),
                        labels, manifest, add_runner)


class IRDump:
    """--dump-ir DIR: the module after each phase as NN_<phase>.py (TVMScript to read) and NN_<phase>.json
    (tvm.ir.load_json gives the module back, weights included); a no-op without DIR."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.count = 0

    def __call__(self, phase: str, mod) -> None:
        if self.directory is None:
            return
        import tvm

        self.count += 1
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"{self.count:02d}_{phase}"
        stem.with_suffix(".py").write_text(mod.script())
        stem.with_suffix(".json").write_text(tvm.ir.save_json(mod))
