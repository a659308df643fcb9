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
    bench = sub.add_parser("bench", help="edgevit bundles vs PyTorch eager and ONNX Runtime FP32, one run")
    bench.add_argument("bundles", type=Path, nargs="+", help="host bundles of the model")
    bench.add_argument("--model", default="deit_tiny_patch16_224")
    bench.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    bench.add_argument("--rounds", type=int, default=20, help="interleaved rounds (5 runs each)")
    bench.add_argument("--limit", type=int, default=None, help="evaluate only the first N evaluation images")
    bench.add_argument("--out", type=Path, default=Path("results/bench"))
    report = sub.add_parser("report", help="markdown tables + plots from farm JSONL results")
    report.add_argument("results", type=Path, nargs="+")
    report.add_argument("--out", type=Path, default=Path("results/farm_report"))
    return parser


def cmd_report(args) -> None:
    from results.report import write_report

    print(write_report(args.results, args.out))


def cmd_bench(args) -> None:
    from rich.console import Console

    if args.threads < 1 or args.rounds < 1:
        raise EdgevitError("--threads and --rounds must be at least 1")
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM starts its thread pool
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # PyTorch's OpenMP pool must not spin between turns
    from results.bench import BenchArgs, markdown_table, run_bench
    from results.records import write_atomic, write_jsonl
    from runtime.bundle import open_bundle

    for bundle in args.bundles:
        open_bundle(bundle)  # refuse corrupt or foreign bundles before measuring anything
    records = run_bench(BenchArgs(args.model, tuple(args.bundles), args.threads, args.rounds, args.limit),
                        Console(stderr=True))
    write_jsonl(args.out / "bench.jsonl", records)
    table = markdown_table(records)
    write_atomic(args.out / "bench.md", table)
    print(table)
    print(args.out / "bench.md")


def cmd_sweep(args) -> None:
    from rich.console import Console

    if args.threads < 1 or args.rounds < 1:
        raise EdgevitError("--threads and --rounds must be at least 1")
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM starts its thread pool
    from results.records import write_atomic, write_jsonl
    from results.sweep import SweepArgs, markdown_table, plot, run_sweep

    console = Console(stderr=True)
    records = run_sweep(
        SweepArgs(model=args.model, target=args.target, r_values=args.tome_r, out_dir=args.out,
                  build_dir=args.build_dir, threads=args.threads, rounds=args.rounds, eval_limit=args.limit),
        console,
    )
    write_jsonl(args.out / "sweep.jsonl", records)
    table = markdown_table(records)
    write_atomic(args.out / "sweep.md", table + "\n![accuracy vs latency](sweep.png)\n")
    plot(records, args.out / "sweep.png")
    print(table)
    print(args.out / "sweep.md")


def main() -> None:
    args = _parser().parse_args()
    {"sweep": cmd_sweep, "bench": cmd_bench, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    run_cli(main)
