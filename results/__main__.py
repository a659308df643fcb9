"""python -m results {sweep,bench,report}: measurements and reports (JSONL, markdown, PNG)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from runtime.errors import EdgevitError, run_cli


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of ints, got '{text}'") from None
    return values


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m results", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="ToMe sweep: accuracy, GFLOPs and latency for each r")
    sweep.add_argument("--tome-r", type=_int_list, default=(0, 4, 8, 12, 13, 15), help="constant r values (the first is the baseline), e.g. 0,4,8,12,13,15")
    sweep.add_argument("--model", default="deit_tiny_patch16_224")
    sweep.add_argument("--target", default="host", help="a preset this machine can run (host)")
    sweep.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    sweep.add_argument("--rounds", type=int, default=10, help="interleaved latency rounds (5 runs each)")
    sweep.add_argument("--limit", type=int, default=None, help="evaluate only the first N evaluation images")
    sweep.add_argument("--out", type=Path, default=Path("results/tome_sweep"), help="folder for JSONL, table and plot")
    sweep.add_argument("--build-dir", type=Path, default=Path("build/sweep"))
    bench = sub.add_parser("bench", help="edgevit vs PyTorch, ONNX Runtime, ExecuTorch, LiteRT: latency, memory, top-1")
    bench.add_argument("bundles", type=Path, nargs="*", help="host bundles of the model, included as they are")
    bench.add_argument("--edgevit", type=_str_list, default=(),
                       help="edgevit modes to compile here, e.g. fp32,int8,int8-full")
    bench.add_argument("--tome-r", type=_int_list, default=(0,), help="ToMe r for each --edgevit mode, e.g. 0,8")
    bench.add_argument("--peers", default="default",
                       help="comma list of peers, 'default', 'all' (adds every ONNX Runtime recipe) or 'none'")
    bench.add_argument("--model", default="deit_tiny_patch16_224")
    bench.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    bench.add_argument("--rounds", type=int, default=20, help="interleaved rounds (5 runs each)")
    bench.add_argument("--limit", type=int, default=None, help="evaluate only the first N evaluation images")
    bench.add_argument("--calib-images", type=int, default=128,
                       help="calibration images for every contender that calibrates (labels.csv rows 1..N, 8..256)")
    bench.add_argument("--memory-runs", type=int, default=20,
                       help="runs of each fresh-process peak-RSS probe (0: skip)")
    bench.add_argument("--no-spin", action="store_true",
                       help="no thread pool spin-waits (ONNX Runtime allow_spinning=0, TVM_THREAD_POOL_SPIN_COUNT=0, "
                            "OMP_WAIT_POLICY=PASSIVE) instead of each runtime's default spinning with a pause between turns")
    bench.add_argument("--build-dir", type=Path, default=Path("build/bench"),
                       help="prepared peers and compiled bundles")
    bench.add_argument("--out", type=Path, default=Path("results/bench"))
    ptq = sub.add_parser("ptq", help="PTQ recipes x ToMe r: top-1 against compiled FP32 on the evaluation images")
    ptq.add_argument("--tome-r", type=_int_list, default=(0, 8), help="constant r values, e.g. 0,8")
    ptq.add_argument("--variants", default="all", help="recipe names separated by ; (see results/ptq.py) or all")
    ptq.add_argument("--model", default="deit_tiny_patch16_224")
    ptq.add_argument("--calib-count", type=int, default=256)
    ptq.add_argument("--limit", type=int, default=None, help="evaluate only the first N evaluation images")
    ptq.add_argument("--out", type=Path, default=Path("results/ptq"))
    ptq.add_argument("--build-dir", type=Path, default=Path("build/ptq"))
    report = sub.add_parser("report", help="markdown tables + plots from farm JSONL results")
    report.add_argument("results", type=Path, nargs="+")
    report.add_argument("--out", type=Path, default=Path("results/farm_report"))
    return parser


def cmd_report(args) -> None:
    from results.report import write_report

    print(write_report(args.results, args.out))


def _peer_names(text: str) -> tuple[str, ...]:
    from results.peers import DEFAULT_PEERS, PEERS

    presets = {"default": DEFAULT_PEERS, "all": tuple(PEERS), "none": ()}
    names = presets[text] if text in presets else _str_list(text)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise EdgevitError(f"unknown peer '{unknown[0]}'; known peers: {', '.join(PEERS)}")
    return names


def cmd_bench(args) -> None:
    from rich.console import Console

    if args.threads < 1 or args.rounds < 1 or args.memory_runs < 0:
        raise EdgevitError("--threads and --rounds must be at least 1, --memory-runs at least 0")
    # before torch (OpenMP) and TVM load, here and in the memory probes. By default every runtime keeps
    # its spinning thread pool and turns start after a pause (results.timing); --no-spin stops all spinning
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    if args.no_spin:
        os.environ["TVM_THREAD_POOL_SPIN_COUNT"] = "0"
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    from compile.quant.calibration import CALIBRATION_ROWS
    from compile.quant.config import MIN_CALIB_IMAGES

    if not MIN_CALIB_IMAGES <= args.calib_images <= CALIBRATION_ROWS:
        raise EdgevitError(f"--calib-images must be {MIN_CALIB_IMAGES}..{CALIBRATION_ROWS} "
                           f"(the calibration split is labels.csv rows 1..{CALIBRATION_ROWS})")
    peers = _peer_names(args.peers)
    if not (peers or args.edgevit or args.bundles):
        raise EdgevitError("nothing to measure: give bundles, --edgevit modes or --peers")
    from results.bench import BenchArgs, run_bench
    from results.bench_report import markdown_table, plot
    from results.edgevit_contenders import check_build_request
    from results.records import write_report
    from runtime.bundle import open_bundle

    for bundle in args.bundles:
        open_bundle(bundle)  # refuse corrupt or foreign bundles before measuring anything
    check_build_request(args.model, args.edgevit, args.tome_r)
    records = run_bench(BenchArgs(args.model, tuple(args.bundles), args.edgevit, args.tome_r, peers, args.threads,
                                  args.rounds, args.limit, args.calib_images, args.memory_runs, args.build_dir,
                                  not args.no_spin),
                        Console(stderr=True))
    table = markdown_table(records)
    write_report(args.out, "bench", records, table, "latency vs top-1", plot)
    print(table)
    print(args.out / "bench.md")


def cmd_sweep(args) -> None:
    from rich.console import Console

    if args.threads < 1 or args.rounds < 1:
        raise EdgevitError("--threads and --rounds must be at least 1")
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM starts its thread pool
    from results.records import write_report
    from results.sweep import SweepArgs, markdown_table, plot, run_sweep

    console = Console(stderr=True)
    records = run_sweep(
        SweepArgs(model=args.model, target=args.target, r_values=args.tome_r, out_dir=args.out,
                  build_dir=args.build_dir, threads=args.threads, rounds=args.rounds, eval_limit=args.limit),
        console,
    )
    table = markdown_table(records)
    write_report(args.out, "sweep", records, table, "accuracy vs latency", plot)
    print(table)
    print(args.out / "sweep.md")


def cmd_ptq(args) -> None:
    from rich.console import Console

    from results.ptq import VARIANTS, PtqArgs, markdown_table, plot, run_ptq
    from results.records import write_report

    names = tuple(VARIANTS) if args.variants == "all" else tuple(v.strip() for v in args.variants.split(";"))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise EdgevitError(f"unknown PTQ variant '{unknown[0]}'; known (separate with ';'): {'; '.join(VARIANTS)}")
    records = run_ptq(PtqArgs(args.model, args.tome_r, names, args.build_dir, args.calib_count, args.limit),
                      Console(stderr=True))
    table = markdown_table(records)
    write_report(args.out, "ptq", records, table, "top-1 per recipe", plot)
    print(table)
    print(args.out / "ptq.md")


def main() -> None:
    args = _parser().parse_args()
    {"sweep": cmd_sweep, "bench": cmd_bench, "ptq": cmd_ptq, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    run_cli(main)
