"""ToMe sweep: for each r, compile the model, measure top-1/top-5, GFLOPs and latency in one run.

Accuracy is measured on the evaluation split only (labels.csv rows after the first 256, which are
kept for calibration), so nothing used to choose r is evaluated on. Latencies of all bundles are
measured interleaved in the same process, after all of them are built. A model without stored
weights is compiled from one random init (results.model_weights): latency and GFLOPs only.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compile.data import CALIBRATION_ROWS  # the evaluation split starts after it
from results.records import save_figure


@dataclass(frozen=True)
class SweepArgs:
    model: str
    target: str
    r_values: tuple[int, ...]
    out_dir: Path
    build_dir: Path
    threads: int
    rounds: int = 10
    eval_limit: int | None = None


def run_sweep(args: SweepArgs, console) -> list[dict]:
    """Build one bundle per r, evaluate and benchmark them; returns one record per r."""
    from rich.progress import Progress

    from compile.data import evaluation_rows, labelled_images
    from compile.pipeline import CompileArgs, bundle_name, compile_bundle
    from results.model_weights import RANDOM_INIT_NOTE, model_weights
    from results.scoring import top5_predictions
    from results.timing import interleaved_latency_ms
    from runtime.bundle import CORE, read_manifest
    from runtime.evaluate import accuracy
    from runtime.model import Model
    from runtime.preprocess import Preprocess

    _check_r_values(args)
    weights = model_weights(args.model, args.build_dir)
    bundles = {}
    for r in args.r_values:
        out = args.build_dir / bundle_name(args.model, args.target, "fp32", str(r))
        console.print(f"[bold]compile r={r}[/bold] -> {out}")
        bundles[r] = compile_bundle(CompileArgs(target=args.target, model=args.model, weights=weights.path,
                                                tome_r=str(r), out=out),
                                    log=lambda m: console.print("  " + m))
    sessions = {r: Model(path, args.threads) for r, path in bundles.items()}
    manifests = {r: read_manifest(path) for r, path in bundles.items()}

    images = labelled_images()
    rows = [] if weights.random_init else evaluation_rows(args.eval_limit)
    labels = np.array([label for _, label in rows])
    models = {r: (s.run_tensor, Preprocess.from_manifest(manifests[r].input, bundles[r] / CORE)) for r, s in sessions.items()}
    with Progress(console=console) as progress:
        task = progress.add_task("evaluate", total=len(rows))
        top5 = top5_predictions(models, images / "images", rows, lambda: progress.advance(task))
        task = progress.add_task("latency (interleaved)", total=args.rounds)
        inputs = {r: manifests[r].input.example() for r in sessions}
        latency = interleaved_latency_ms(
            {r: (lambda s=s, x=inputs[r]: s.run_tensor(x)) for r, s in sessions.items()},
            rounds=args.rounds, progress=lambda: progress.advance(task),
        )
    base = latency[args.r_values[0]]["median_ms"]
    records = []
    for r, manifest in manifests.items():
        records.append({
            "model": args.model, "target": args.target, "tome_r": r, "schedule": manifest.tome.schedule,
            "gflops": manifest.tome.gflops,
            **dict(zip(("top1", "top5"), (None, None) if weights.random_init else accuracy(top5[r], labels))),
            "weights": RANDOM_INIT_NOTE if weights.random_init else "stored", "random_init": weights.random_init,
            "n_images": len(rows), "split": f"labels.csv rows {CALIBRATION_ROWS + 1}..",
            **latency[r], "speedup_vs_first": base / latency[r]["median_ms"], "threads": args.threads,
            "cpu": _cpu_name(), "machine": platform.machine(),
        })
    return records


def _check_r_values(args: SweepArgs) -> None:
    """Every r must be valid for the model before anything is compiled (clear error otherwise)."""
    from compile.model.models import load_model
    from compile.model.tome_patch import num_tokens
    from compile.model.tome_schedule import parse_tome_r

    model = load_model(args.model, pretrained_required=False)
    for r in args.r_values:
        parse_tome_r(r, len(model.blocks), num_tokens(model), model.num_prefix_tokens)


def _cpu_name() -> str:
    from runtime.bench import machine_facts

    return machine_facts()["cpu"]


def markdown_table(records: list[dict]) -> str:
    """The sweep as a markdown table (without accuracy columns for a random-init model)."""
    first = records[0]
    scored = not first.get("random_init", False)
    lines = [
        (f"ToMe sweep: {first['model']} on {first['target']} ({first['cpu']}, {first['threads']} threads); "
         + (f"accuracy on {first['n_images']} evaluation images ({first['split']})" if scored
            else f"weights: {first['weights']} (no weights of this model on this machine)")),
        "",
        "| r | GFLOPs |" + (" top-1 | top-5 |" if scored else "") + " median ms | p90 ms | speed-up |",
        "|---|---|" + ("---|---|" if scored else "") + "---|---|---|",
    ]
    for rec in records:
        accuracy = f" {rec['top1'] * 100:.2f}% | {rec['top5'] * 100:.2f}% |" if scored else ""
        lines.append(f"| {rec['tome_r']} | {rec['gflops']:.2f} |{accuracy} {rec['median_ms']:.2f} | "
                     f"{rec['p90_ms']:.2f} | {rec['speedup_vs_first']:.2f}x |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    """Top-1 (GFLOPs for a random-init model) vs median latency, one labelled point per r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["median_ms"] for r in records]
    scored = not records[0].get("random_init", False)
    ys = [r["top1"] * 100 if scored else r["gflops"] for r in records]
    ax.plot(xs, ys, "o-")
    for rec, x, y in zip(records, xs, ys):
        ax.annotate(f"r={rec['tome_r']}", (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("median latency, batch 1 (ms)")
    ax.set_ylabel("top-1 (%)" if scored else f"GFLOPs ({records[0]['weights']})")
    ax.set_title(f"ToMe: {records[0]['model']} on {records[0]['target']}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
