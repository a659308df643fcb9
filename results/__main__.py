"""python -m results {sweep,bench,ptq,profile,arm,report}: measurements and reports (JSONL, markdown, PNG)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from compile.model.models import DEFAULT_MODEL
from compile.quant.config import QuantConfig
from runtime.errors import EdgevitError, run_cli
from runtime.options import anywhere


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of ints, got '{text}'") from None
    return values


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


CUDA_BENCH_OUT = Path("results/data/bench_cuda")  # bench --device cuda: its own folder, beside the CPU results
DEFAULTS = {  # each command's values of the shared options it takes (SHARED), filled in after parsing
    "sweep": {"out": Path("results/data/tome_sweep"), "build_dir": Path("build/sweep"), "model": DEFAULT_MODEL,
              "limit": None, "threads": len(os.sched_getaffinity(0)), "rounds": 10},
    "bench": {"out": Path("results/data/bench"), "build_dir": Path("build/bench"), "model": DEFAULT_MODEL,
              "limit": None, "threads": len(os.sched_getaffinity(0)), "rounds": 20},
    "ptq": {"out": Path("results/data/ptq"), "build_dir": Path("build/ptq"), "model": DEFAULT_MODEL, "limit": None},
    "profile": {"out": Path("results/data/profile"), "threads": len(os.sched_getaffinity(0))},
    "arm": {"out": Path("results/data/arm"), "build_dir": Path("build/arm")},
    "report": {"out": Path("results/data/farm_report")},
}


def _defaults_help(dest: str) -> str:
    return "default: " + ", ".join(f"{cmd} {values[dest]}" for cmd, values in DEFAULTS.items() if dest in values)


SHARED = {  # options accepted before and after the subcommand: flag -> add_argument keywords
    "--out": {"type": Path, "help": f"folder for JSONL, table and plot ({_defaults_help('out')})"},
    "--build-dir": {"type": Path, "help": f"bundles and prepared peers ({_defaults_help('build_dir')})"},
    "--model": {"help": f"timm model ({DEFAULT_MODEL})"},
    "--limit": {"type": int, "help": "evaluate only the first N evaluation images"},
    "--threads": {"type": int, "help": "threads of every runtime (default: the CPUs this process may use)"},
    "--rounds": {"type": int, "help": f"interleaved latency rounds, 5 runs each ({_defaults_help('rounds')})"},
}


def _shared_options(command: str | None) -> Callable[[argparse.ArgumentParser], None]:
    """What adds the shared options `command` takes (None: all of them, for the main parser) to a parser. They
    are parsed before or after the subcommand (runtime.options) without defaults of their own; parse_args
    fills in the command's defaults."""

    def define(parser: argparse.ArgumentParser) -> None:
        for flag, keywords in SHARED.items():
            if command is None or _dest(flag) in DEFAULTS[command]:
                parser.add_argument(flag, **keywords)

    return define


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _parser() -> argparse.ArgumentParser:
    from results.arm.contenders import PEERS as ARM_PEERS

    parser = argparse.ArgumentParser(prog="python -m results", description=__doc__,
                                     parents=[anywhere(_shared_options(None))[0]])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[anywhere(_shared_options(name))[1]])

    sweep = add("sweep", "ToMe sweep: accuracy, GFLOPs and latency for each r")
    sweep.add_argument("--tome-r", type=_int_list, default=(0, 4, 8, 12, 13, 15),
                       help="constant r values (the first is the baseline), e.g. 0,4,8,12,13,15")
    sweep.add_argument("--target", default="host", help="a preset this machine can run (host)")
    bench = add("bench", "edgevit vs PyTorch, ONNX Runtime, ExecuTorch, LiteRT (cpu) or TensorRT (cuda): latency, "
                         "memory, top-1")
    bench.add_argument("bundles", type=Path, nargs="*",
                       help="bundles of the model for --device, included as they are")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help=f"where every contender runs: this machine's CPU (default) or its GPU 0 (--out default "
                            f"{CUDA_BENCH_OUT})")
    bench.add_argument("--target", default=None,
                       help="preset of the bundles --edgevit compiles (default: host on cpu; on cuda the cuda-sm<NN> "
                            "preset of the GPU's compute capability, cuda-sm80 when it cannot be read)")
    bench.add_argument("--edgevit", type=_str_list, default=(),
                       help="edgevit modes to compile here, e.g. fp32,int8,int8-full")
    bench.add_argument("--tome-r", type=_int_list, default=(0,), help="ToMe r for each --edgevit mode, e.g. 0,8")
    bench.add_argument("--peers", default="default",
                       help="comma list of peers, 'default', 'all' (cpu: adds every ONNX Runtime recipe) or 'none'; "
                            "cuda peers: pytorch-cuda-fp32, pytorch-cuda-fp16, onnxruntime-cuda-fp32, tensorrt-fp16, "
                            "tensorrt-int8 (default: all)")
    bench.add_argument("--calib-images", type=int, default=128,
                       help="calibration images for every contender that calibrates (labels.csv rows 1..N, 8..256)")
    bench.add_argument("--memory-runs", type=int, default=20,
                       help="runs of each fresh-process peak-RSS probe (0: skip)")
    bench.add_argument("--no-spin", action="store_true",
                       help="no thread pool spin-waits (ONNX Runtime allow_spinning=0, TVM_THREAD_POOL_SPIN_COUNT=0, "
                            "OMP_WAIT_POLICY=PASSIVE) instead of each runtime's default spinning with a pause "
                            "between turns")
    ptq = add("ptq", "PTQ recipes x ToMe r: top-1 against compiled FP32 on the evaluation images")
    ptq.add_argument("--tome-r", type=_int_list, default=(0, 8), help="constant r values, e.g. 0,8")
    ptq.add_argument("--variants", default="all",
                     help="recipe names separated by ; (see results/ptq.py), all, or lowbit (W4A8 and mixed, simulated, "
                          "with compiled FP32 and int8)")
    ptq.add_argument("--calib-count", type=int, default=QuantConfig.calib_count)
    profile = add("profile", "time per kernel of bundles' inference, grouped (GEMM, attention, softmax, ...)")
    profile.add_argument("bundles", type=Path, nargs="+", help="bundles this machine can run")
    profile.add_argument("--repeat", type=int, default=40,
                         help="rounds of 5 plain and 1 instrumented inference each (default 40)")
    arm = add("arm", "instructions per inference on an emulated Raspberry Pi CPU (qemu), by class and kernel, "
                     "against LiteRT / ONNX Runtime INT8, with an estimated latency on the board")
    arm.add_argument("bundles", type=Path, nargs="+", help="aarch64 bundles (one model when peers are counted)")
    arm.add_argument("--board", required=True, help="board preset with a counting model: rpi5 (Cortex-A76), rpi4 "
                                                    "(Cortex-A72)")
    arm.add_argument("--peers", default=",".join(ARM_PEERS),
                     help=f"comma list of {', '.join(ARM_PEERS)}, or none (default: all)")
    arm.add_argument("--warmup", type=int, default=2, help="uncounted inferences first (default 2: from the third on, "
                                                           "every edgevit inference executes the same instructions)")
    arm.add_argument("--repeat", type=int, default=2, help="counted inferences (default 2)")
    arm.add_argument("--calib-images", type=int, default=128, help="calibration images of the INT8 peers")
    arm.add_argument("--gemm-shapes", action="store_true",
                     help="also count each int8 GEMM shape of the first bundle alone, against its SDOT floor")
    arm.add_argument("--json", action="store_true", help="print one JSON object last ({board, contenders})")
    report = add("report", "markdown tables + plots from farm JSONL results")
    report.add_argument("results", type=Path, nargs="+")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Shared options may come before or after the subcommand; those not given get the command's default."""
    parser = _parser()
    args = parser.parse_args(argv)
    for flag in SHARED:
        if hasattr(args, _dest(flag)) and _dest(flag) not in DEFAULTS[args.command]:
            parser.error(f"{flag} does not apply to '{args.command}'")
    args.defaulted = set()  # the shared options not given, so a command may choose another default (bench --device)
    for dest, value in DEFAULTS[args.command].items():
        if not hasattr(args, dest):
            setattr(args, dest, value)
            args.defaulted.add(dest)
    return args


def cmd_report(args) -> None:
    from results.farm_report import write_farm_report

    print(write_farm_report(args.results, args.out))


def _publish(out: Path, stem: str, records: list[dict], markdown_table, caption: str, plot) -> None:
    """Write the results folder (JSONL, table, plot); print the table, then the table's path as the last line."""
    from results.records import write_results_folder

    table = markdown_table(records)
    write_results_folder(out, stem, records, table, caption, plot)
    print(table)
    print(out / f"{stem}.md")


def _peer_names(text: str, device: str) -> tuple[str, ...]:
    from results.peers.prepare import DEVICE_PEERS

    peers, default = DEVICE_PEERS[device]
    presets = {"default": default, "all": tuple(peers), "none": ()}
    names = presets[text] if text in presets else _str_list(text)
    unknown = [n for n in names if n not in peers]
    if unknown:
        raise EdgevitError(f"unknown peer '{unknown[0]}' for --device {device}; known peers: {', '.join(peers)}")
    return names


def _bench_target(args) -> str:
    """The preset --edgevit compiles for: --target (it must run on --device), else the device's default."""
    from targets import load_preset

    if args.target is None:
        if args.device == "cpu":
            return "host"
        from results.peers.cuda_device import default_cuda_target, gpu_facts

        return default_cuda_target(gpu_facts()["compute_capability"])
    preset = load_preset(args.target)
    if preset.device != args.device:
        raise EdgevitError(f"--target {args.target} builds for {preset.device}, not --device {args.device}")
    return preset.name


def cmd_bench(args) -> None:
    from rich.console import Console

    from compile.data import CALIBRATION_ROWS
    from compile.quant.config import MIN_CALIB_IMAGES

    if args.threads < 1 or args.rounds < 1 or args.memory_runs < 0:
        raise EdgevitError("--threads and --rounds must be at least 1, --memory-runs at least 0")
    if not MIN_CALIB_IMAGES <= args.calib_images <= CALIBRATION_ROWS:
        raise EdgevitError(f"--calib-images must be {MIN_CALIB_IMAGES}..{CALIBRATION_ROWS} "
                           f"(the calibration split is labels.csv rows 1..{CALIBRATION_ROWS})")
    # before torch (OpenMP) and TVM load, here and in the memory probes. By default every runtime keeps
    # its spinning thread pool and turns start after a pause (results.timing); --no-spin stops all spinning
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    if args.no_spin:
        os.environ["TVM_THREAD_POOL_SPIN_COUNT"] = "0"
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    peers = _peer_names(args.peers, args.device)
    if not (peers or args.edgevit or args.bundles):
        raise EdgevitError("nothing to measure: give bundles, --edgevit modes or --peers")
    if args.device == "cuda":
        from results.peers.cuda_device import require_cuda

        require_cuda()  # before anything is prepared or written
    target = _bench_target(args)
    if args.device == "cuda" and "out" in args.defaulted:
        args.out = CUDA_BENCH_OUT
    from results.peers.edgevit_contenders import check_build_request
    from results.peers.suite import BenchArgs, run_bench
    from results.peers.table import markdown_table, plot
    from runtime.bundle import verified_manifest

    for bundle in args.bundles:  # refuse corrupt, foreign or other-device bundles before measuring anything
        device = verified_manifest(bundle).target.device
        if device != args.device:
            raise EdgevitError(f"bundle {bundle} runs on {device}, not --device {args.device}")
    check_build_request(args.model, args.edgevit, args.tome_r)
    records = run_bench(BenchArgs(args.model, tuple(args.bundles), args.edgevit, args.tome_r, peers, args.threads,
                                  args.rounds, args.limit, args.calib_images, args.memory_runs, args.build_dir,
                                  not args.no_spin, args.device, target),
                        Console(stderr=True))
    _publish(args.out, "bench", records, markdown_table, "latency vs top-1", plot)


def cmd_sweep(args) -> None:
    from rich.console import Console

    if args.threads < 1 or args.rounds < 1:
        raise EdgevitError("--threads and --rounds must be at least 1")
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM starts its thread pool
    from results.sweep import SweepArgs, markdown_table, plot, run_sweep

    records = run_sweep(
        SweepArgs(model=args.model, target=args.target, r_values=args.tome_r, out_dir=args.out,
                  build_dir=args.build_dir, threads=args.threads, rounds=args.rounds, eval_limit=args.limit),
        Console(stderr=True),
    )
    _publish(args.out, "sweep", records, markdown_table, "accuracy vs latency", plot)


def cmd_ptq(args) -> None:
    from rich.console import Console

    from results.ptq import VARIANT_SETS, VARIANTS, PtqArgs, markdown_table, plot, run_ptq

    names = VARIANT_SETS.get(args.variants) or tuple(v.strip() for v in args.variants.split(";"))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise EdgevitError(f"unknown PTQ variant '{unknown[0]}'; known (separate with ';'): {'; '.join(VARIANTS)}; "
                           f"or a set: {', '.join(VARIANT_SETS)}")
    records = run_ptq(PtqArgs(args.model, args.tome_r, names, args.build_dir, args.calib_count, args.limit),
                      Console(stderr=True))
    _publish(args.out, "ptq", records, markdown_table, "top-1 per recipe", plot)


def cmd_profile(args) -> None:
    if args.threads < 1 or args.repeat < 1:
        raise EdgevitError("--threads and --repeat must be at least 1")
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM starts its thread pool
    from results.profile import ProfileArgs, markdown_table, plot, run_profile
    from runtime.bundle import verified_manifest

    for bundle in args.bundles:  # refuse corrupt, foreign or GPU bundles before measuring anything
        device = verified_manifest(bundle).target.device
        if device != "cpu":
            raise EdgevitError(f"bundle {bundle}: profile times CPU bundles (its kernels run on {device})")
    records = run_profile(ProfileArgs(tuple(args.bundles), args.threads, args.repeat))
    _publish(args.out, "profile", records, markdown_table, "time per group", plot)


def cmd_arm(args) -> None:
    import json

    from rich.console import Console

    from results.arm.report import markdown_table, plot
    from results.arm.run import ArmArgs, run_arm

    console = Console(stderr=True)
    peers = () if args.peers == "none" else _str_list(args.peers)
    records = run_arm(ArmArgs(tuple(args.bundles), args.board, peers, args.build_dir, args.warmup, args.repeat,
                              args.calib_images, args.gemm_shapes), console.print)
    _publish(args.out, "arm", records, markdown_table, "instructions by class", plot)
    if args.json:
        print(json.dumps({"board": args.board, "contenders": records}))


def main() -> None:
    args = parse_args()
    {"sweep": cmd_sweep, "bench": cmd_bench, "ptq": cmd_ptq, "profile": cmd_profile, "arm": cmd_arm,
     "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    run_cli(main)
