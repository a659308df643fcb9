"""python -m compile: parse the command line, call compile.pipeline, print the bundle path last."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compile.data import CALIBRATION_ROWS
from compile.model.models import INTERPOLATIONS, OUTPUTS
from compile.quant.config import OBSERVERS, QUANT_MODES, W4_GROUPS, W4_ROUNDINGS, WEIGHT_SCALES, QuantConfig
from compile.quant.formats import MIXED_FORMATS
from runtime.errors import run_cli
from runtime.tracker import Tracker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compile", description="Compile a timm ViT into an edgevit bundle.")
    parser.add_argument("--target", default="host", help="target preset (see --list-targets); default: host")
    parser.add_argument("--model", default=None,
                        help="a timm ViT of the standard structure: DeiT, DeiT III, ViT / AugReg (patch 8/14/16/32, "
                             "224/384 px), DINOv2 (registers too), CLIP image towers, average-pool ViTs "
                             "(default: the weights folder's architecture, else deit_tiny_patch16_224)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="the model's weights: .safetensors, a PyTorch state dict / training checkpoint "
                             "(.pth, .pt, .pth.tar, .bin; EMA weights preferred), a folder in timm's Hugging Face "
                             "layout (config.json + model.safetensors), or a transformers ViT / DeiT "
                             "image-classification folder (save_pretrained); the head sets the number of classes")
    parser.add_argument("--labels", type=Path, default=None, metavar="FILE",
                        help="class names, one per line, as many as the head has (default: ImageNet's for 1000 classes)")
    parser.add_argument("--output", choices=OUTPUTS, default="logits",
                        help="logits (default): the classifier; features: the model without its head, returning the "
                             "pooled pre-logits embedding (e.g. DINOv2 / CLIP for retrieval)")
    parser.add_argument("--quant", default="fp32", metavar="|".join(QUANT_MODES),
                        help="fp32 | int8 (integer GEMMs, float softmax/GELU/LayerNorm) | int8-full (integer only) | "
                             "w4a8 (int8 with 4-bit GEMM weights) | mixed (a format per GEMM under --max-drop or --size-mb)")
    pre = parser.add_argument_group("preprocessing (default: timm's pretrained config for the model)")
    pre.add_argument("--image-size", type=int, default=None, metavar="PX", help="square input size (e.g. 224 for DINOv2)")
    pre.add_argument("--mean", type=_three_floats, default=None, metavar="R,G,B", help="per-channel mean on [0, 1] pixels")
    pre.add_argument("--std", type=_three_floats, default=None, metavar="R,G,B", help="per-channel std on [0, 1] pixels")
    pre.add_argument("--crop-pct", type=float, default=None, help="center crop fraction: resize to size / crop_pct first")
    pre.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize filter")
    quant = parser.add_argument_group("post-training quantization (int8, int8-full)")
    quant.add_argument("--calib-images", type=Path, default=None,
                       help=f"folder of calibration images (default: the first {CALIBRATION_ROWS} rows of the data "
                            "directory's labels.csv)")
    quant.add_argument("--calib-count", type=int, default=QuantConfig.calib_count,
                       help=f"calibration images to use (default {QuantConfig.calib_count})")
    quant.add_argument("--observer", default="mse", metavar="|".join(OBSERVERS),
                       help="activation range observer (default: mse, the clip with the least expected error)")
    quant.add_argument("--outliers", choices=("on", "off"), default="on",
                       help="outlier channels of LayerNorm outputs: per-channel scales folded into the next weights (default on)")
    quant.add_argument("--fc2-groups", type=int, default=1, metavar="G",
                       help="power-of-two channel groups for fc2 inputs, partial sums combined by shifts (Tender); 1: off")
    quant.add_argument("--weight-scales", choices=WEIGHT_SCALES, default="channel",
                       help="int8 weight scales per output channel (default) or per tensor")
    quant.add_argument("--keep-float", type=int, default=0, metavar="K", help="keep the K most sensitive layers in float32")
    quant.add_argument("--keep-float-error", type=float, default=None, metavar="E",
                       help="keep every layer whose relative quantization error exceeds E in float32")
    low = parser.add_argument_group("4-bit weights and formats per layer (w4a8, mixed)")
    low.add_argument("--w4-group", metavar="|".join(W4_GROUPS), default="32",
                     help="input rows per int4 weight scale, or one scale per output channel (default 32)")
    low.add_argument("--w4-rounding", metavar="|".join(W4_ROUNDINGS), default="gptq",
                     help="gptq: error-compensating, with each GEMM's calibration Hessian (default); rtn: to nearest; "
                          "block: gptq, then each block's codes learned against its float output (w4a8; ~1 min per "
                          "DeiT-tiny block on two cores)")
    low.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                     help="mixed: the smallest model whose top-1 drop, estimated on held-out calibration images, is <= POINTS")
    low.add_argument("--size-mb", type=float, default=None, metavar="MB",
                     help="mixed: the most accurate model whose parameters take at most MB (10^6 bytes)")
    low.add_argument("--formats", type=lambda text: tuple(v.strip() for v in text.split(",") if v.strip()), default=None,
                     metavar=",".join(MIXED_FORMATS), help="mixed: the formats to choose from (default: all the target runs; "
                                                           "float16 on rpi5 and the CUDA presets)")
    tune = parser.add_argument_group("tuning (MetaSchedule; stored per target, applied by every later compile)")
    tune.add_argument("--tune", type=int, default=0, metavar="N",
                      help="run about N more trials before building and add them to the target's database "
                           "(targets/tuning/<target>); re-running continues from it")
    tune.add_argument("--tune-rpc", default=None, metavar="KEY",
                      help="measure on the board registered at the RPC tracker with KEY (default: on this machine)")
    tune.add_argument("--tracker", default=str(Tracker()), metavar="HOST:PORT", help="RPC tracker for --tune-rpc")
    tune.add_argument("--tuning-db", type=Path, default=None, metavar="DIR",
                      help="use (and with --tune, extend) the database in DIR instead of the target's; "
                           "a DIR without one builds with the hand schedules only")
    parser.add_argument(
        "--tome-r", default="0",
        help="token merging per block: an int (e.g. 8), a comma list with one value per block, or 'R:decrease'",
    )
    parser.add_argument("--out", type=Path, default=None, help="bundle directory (default: build/<model>-<target>-<quant>)")
    parser.add_argument("--sign", type=Path, default=None, metavar="FILE",
                        help="sign the bundle with this private key (python -m remote keygen FILE): manifest.json.sig")
    parser.add_argument("--random-init", action="store_true", help="no weights: random initialisation (testing only)")
    parser.add_argument("--dump-ir", type=Path, default=None, help="write the IR after each phase into this folder")
    parser.add_argument("--list-targets", action="store_true", help="list the target presets and exit")
    return parser


def _three_floats(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got '{text}'")
    return values


def _list_targets() -> None:
    from targets import list_presets

    for preset in list_presets():
        target = preset.tvm_target
        cpu = preset.cpu_target.get("mcpu", "")
        kind = f"cuda {target['arch']} + {cpu}" if preset.device == "cuda" else f"{preset.arch} {cpu}"
        aliases = f" (alias: {', '.join(preset.aliases)})" if preset.aliases else ""
        print(f"{preset.name:<18} {kind:<32} {preset.description}{aliases}")


def main() -> None:
    args = _parser().parse_args()
    if args.list_targets:
        _list_targets()
        return
    from compile.pipeline import CompileArgs, Preprocessing, compile_bundle
    from compile.tuning.settings import TuneSettings

    quant = QuantConfig(
        mode=args.quant, calib_images=args.calib_images, calib_count=args.calib_count, observer=args.observer,
        outliers=args.outliers == "on", fc2_groups=args.fc2_groups, weight_scales=args.weight_scales,
        keep_float=args.keep_float, keep_float_error=args.keep_float_error, w4_group=W4_GROUPS.get(args.w4_group, args.w4_group),
        w4_rounding=args.w4_rounding, max_drop=args.max_drop, size_mb=args.size_mb, formats=args.formats,
    )
    compile_args = CompileArgs(
        target=args.target, model=args.model, weights=args.weights, labels=args.labels, output=args.output, quant=quant,
        tome_r=args.tome_r, out=args.out, random_init=args.random_init, dump_ir=args.dump_ir, sign=args.sign,
        preprocessing=Preprocessing(image_size=args.image_size, mean=args.mean, std=args.std, crop_pct=args.crop_pct,
                                    interpolation=args.interpolation),
        tuning=TuneSettings(trials=args.tune, rpc_key=args.tune_rpc, tracker=Tracker.parse(args.tracker),
                            database_dir=args.tuning_db),
    )
    bundle = compile_bundle(compile_args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(bundle)


if __name__ == "__main__":
    run_cli(main)
