"""The compile flow as its list of phases: load -> calibrate -> emit graph -> lower -> build -> bundle.

`compile_bundle(CompileArgs)` is what `python -m compile` calls; each phase is a function of its own module
(compile.model, compile.quant, compile.graph, compile.lowering via compile.build, compile.bundle), and
`--dump-ir DIR` writes the Relax module after each phase that makes one, the emitted graph first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compile.quant.config import QuantConfig
from compile.tuning.settings import TuneSettings
from runtime.errors import EdgevitError
from runtime.manifest import Manifest, ModelInfo, QuantInfo, TargetInfo, TomeInfo
from runtime.signing import read_private_key
from runtime.versions import versions
from targets import TargetPreset

Log = Callable[[str], None]


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
    model: str | None = None  # timm name; None: the weights folder's architecture, else the default model
    weights: Path | None = None  # safetensors, or a PyTorch state dict / training checkpoint (compile.model.checkpoint)
    labels: Path | None = None  # class names, one per line; None: ImageNet's for 1000 classes, else class_<i>
    output: str = "logits"  # logits | features: the pooled pre-logits embedding, without the head
    preprocessing: Preprocessing = Preprocessing()  # input size, mean / std, ... (None: timm's config for the model)
    tome_r: str = "0"  # constant r, a comma list per block, or "R:decrease" (compile.model.tome_schedule)
    out: Path | None = None
    random_init: bool = False  # no weights needed: for tests of architectures without local weights
    dump_ir: Path | None = None
    sign: Path | None = None  # private key (runtime.signing) that signs the manifest: manifest.json.sig
    quant: QuantConfig = QuantConfig()  # fp32, or the post-training quantization recipe (compile.quant)
    # MetaSchedule: trials to tune before building (0: use the shipped database as it is)
    tuning: TuneSettings = TuneSettings()


def bundle_name(model: str, preset: str, quant: str, tome_r: str = "0", output: str = "logits") -> str:
    """<model>-<target>-<quant>[-tome<r>][-features]: the default bundle directory name."""
    tome = "" if tome_r.strip() in ("", "0") else "-tome" + tome_r.replace(",", "_").replace(":", "-")
    return f"{model}-{preset}-{quant}{tome}{'-features' if output == 'features' else ''}"


@dataclass(frozen=True)
class Loaded:
    """What the load phase found: the model by name, its preset, preprocessing, checkpoint and bundle path."""

    name: str
    preset: TargetPreset
    spec: object  # compile.model.models.ModelSpec
    checkpoint: object | None  # compile.model.checkpoint.Checkpoint
    out: Path
    offered: tuple[str, ...]  # the layer formats --quant mixed may choose from on this preset (and the graph emits)


def resolve(args: CompileArgs) -> Loaded:
    """Check the arguments, the preset and its toolchains before any heavy work; find the weights."""
    from compile.build import check_toolchain
    from compile.model.models import DEFAULT_MODEL, OUTPUTS, find_checkpoint, model_spec
    from compile.quant.formats import offered_formats
    from targets import load_preset

    if args.output not in OUTPUTS:
        raise EdgevitError(f"--output {args.output}: expected one of {', '.join(OUTPUTS)}")
    if args.output == "features" and args.labels is not None:
        raise EdgevitError("--labels names classes; a --output features bundle has none (it returns the embedding)")
    preset = load_preset(args.target)
    offered = offered_formats(args.quant, preset)
    checkpoint = find_checkpoint(args.model or DEFAULT_MODEL, args.weights)
    name = args.model or (checkpoint.architecture if checkpoint else None) or DEFAULT_MODEL
    if args.model and checkpoint and checkpoint.architecture not in (None, args.model):
        raise EdgevitError(f"--weights {args.weights} holds {checkpoint.architecture}, not --model {args.model}")
    spec = model_spec(name, **{**(checkpoint.preprocessing if checkpoint else {}), **args.preprocessing.given()})
    check_toolchain(preset)
    out = args.out or Path("build") / bundle_name(name, preset.name, args.quant.mode, args.tome_r, args.output)
    return Loaded(name, preset, spec, checkpoint, out, offered)


def load(args: CompileArgs, loaded: Loaded, log: Log):
    """(the timm model, its description with the ToMe schedule) of phase 1."""
    from compile.model.architecture import int8_unsupported
    from compile.model.models import build_model
    from compile.model.tome_patch import num_tokens
    from compile.model.tome_schedule import parse_tome_r
    from compile.model.vit import describe

    log(f"[1/6] loading {loaded.name}")
    if loaded.checkpoint is not None:
        log(f"      weights: {loaded.checkpoint.source} ({loaded.checkpoint.num_classes} classes)")
    model = build_model(loaded.spec, loaded.checkpoint, pretrained_required=not args.random_init, output=args.output)
    if args.output == "features":
        log(f"      output: the pooled pre-logits embedding ({model.num_features} values), no head")
    problem = int8_unsupported(model) if args.quant.is_integer else None
    if problem is not None:
        raise EdgevitError(f"--quant {args.quant.mode} for {loaded.name}: the integer graph does not handle its "
                           f"{problem} yet; compile it with --quant fp32")
    schedule = parse_tome_r(args.tome_r, len(model.blocks), num_tokens(model), model.num_prefix_tokens)
    if any(schedule):
        log(f"      ToMe: merging {sum(schedule)} tokens over {len(schedule)} blocks {schedule}")
    return model, describe(model, schedule, loaded.spec.mean, loaded.spec.std)


def calibrate(args: CompileArgs, loaded: Loaded, model, vit, log: Log):
    """(quantization parameters or None, the layer table, the description they belong to) of phase 2."""
    from compile.quant.formats import layer_formats

    if not args.quant.is_integer:
        log("[2/6] fp32: nothing to calibrate")
        return None, layer_formats("fp32", vit), vit
    from compile.quant.formats import check_target_formats
    from compile.quant.quantize import quantize

    log(f"[2/6] post-training quantization ({args.quant.mode})")
    quant, formats = quantize(model, vit, loaded.spec, args.quant, log, loaded.offered)
    check_target_formats(formats, loaded.preset)
    return quant, formats, quant.vit


def manifest(args: CompileArgs, loaded: Loaded, vit, formats, quant) -> Manifest:
    """The bundle's manifest (files are added when it is written)."""
    from compile.model.tome_schedule import token_counts
    from compile.quant.sensitivity import layer_report

    preset = loaded.preset
    schedule = [block.tome_r for block in vit.blocks]
    num_classes = 0 if vit.output == "features" else vit.heads[0].weight.shape[1]
    return Manifest(
        model=ModelInfo(name=loaded.name, num_classes=num_classes, embed_dim=vit.patch.weight.shape[1],
                        depth=len(vit.blocks), output=args.output),
        input=loaded.spec.input_spec(formats.input_dtype(vit)),
        tome=TomeInfo(schedule=schedule, tokens_per_block=token_counts(schedule, vit.tokens), gflops=round(vit.gflops(), 4)),
        quant=QuantInfo(mode=args.quant.mode) if quant is None else
        QuantInfo(mode=args.quant.mode, recipe=quant.recipe, layers=layer_report(quant.linears(), formats)),
        target=TargetInfo(preset=preset.name, tvm_target=preset.tvm_target, arch=preset.arch, device=preset.device,
                          required_cpu_features=list(preset.required_cpu_features)),
        versions=versions(tvm="apache-tvm", torch="torch", timm="timm"),
        created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def compile_bundle(args: CompileArgs, log: Log = print) -> Path:
    """Compile one model for one target preset and write its bundle; returns the bundle path."""
    from compile.build import build_library, lower
    from compile.bundle import write_bundle
    from compile.graph.builder import emit_graph
    from compile.native import toolchain_for

    signing_key = read_private_key(args.sign) if args.sign is not None else None  # a bad key fails before the work
    loaded = resolve(args)
    native = toolchain_for(loaded.preset)  # the native core's toolchain, checked before any heavy work
    dump = IRDump(args.dump_ir)
    model, vit = load(args, loaded, log)
    quant, formats, vit = calibrate(args, loaded, model, vit, log)
    log(f"[3/6] emitting the graph ({', '.join(sorted({fmt for _, fmt in formats.table}))} layers)")
    mod = emit_graph(vit, formats, quant, loaded.preset.target())
    dump("graph", mod)
    log(f"[4/6] lowering for {loaded.preset.name} "
        f"({loaded.preset.tvm_target.get('mcpu', loaded.preset.tvm_target.get('arch'))})")
    lowered = lower(mod, loaded.preset, args.tuning, dump, log)
    labels = [] if args.output == "features" else class_names(
        vit.heads[0].weight.shape[1], args.labels, loaded.checkpoint.label_names if loaded.checkpoint else None)

    def build(path: Path) -> dict[str, bytes]:
        log(f"[5/6] building model.so for {loaded.preset.name}")
        files = build_library(lowered, loaded.preset, path)
        log(f"[6/6] writing bundle {loaded.out} with its native core for {native.arch}")
        return files

    return write_bundle(loaded.out, build, labels, manifest(args, loaded, vit, formats, quant),
                        _core(native, loaded.preset), signing_key)


def _core(native, preset: TargetPreset) -> Callable[[Path], list[str]]:
    """What writes the native core, its runner and libraries into a bundle directory."""
    from compile.native import build_runner

    return lambda bundle_dir: build_runner(bundle_dir, native, cuda=preset.device == "cuda")


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
