"""python -m compile: parse the command line, call compile.pipeline, print the bundle path last."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.errors import run_cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compile", description="Compile a timm ViT into an edgevit bundle.")
    parser.add_argument("--target", default="host", help="target preset (see --list-targets); default: host")
    parser.add_argument("--model", default="deit_tiny_patch16_224", help="timm model name")
    parser.add_argument("--weights", type=Path, default=None, help="safetensors state dict of the model")
    parser.add_argument("--quant", default="fp32", help="quantization mode: fp32")
    parser.add_argument(
        "--tome-r", default="0",
        help="token merging per block: an int (e.g. 8), a comma list with one value per block, or 'R:decrease'",
    )
    parser.add_argument("--out", type=Path, default=None, help="bundle directory (default: build/<model>-<target>-<quant>)")
    parser.add_argument("--random-init", action="store_true", help="no weights: random initialisation (testing only)")
    parser.add_argument("--dump-ir", type=Path, default=None, help="write the IR after each phase into this folder")
    parser.add_argument("--list-targets", action="store_true", help="list the target presets and exit")
    return parser


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
    from compile.pipeline import CompileArgs, compile_bundle

    compile_args = CompileArgs(
        target=args.target, model=args.model, weights=args.weights, quant=args.quant, tome_r=args.tome_r, out=args.out,
        random_init=args.random_init, dump_ir=args.dump_ir,
    )
    bundle = compile_bundle(compile_args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(bundle)


if __name__ == "__main__":
    run_cli(main)
