"""Latency and accuracy of edgevit bundles and their peers, measured in one run on one machine.

Contenders are timed interleaved (results.timing) so a noisy, shared machine slows them alike;
each also gets its top-1 on the evaluation split, computed here from its own outputs.
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from results.sweep import CALIBRATION_ROWS


@dataclass(frozen=True)
class BenchArgs:
    model: str
    bundles: tuple[Path, ...]
    threads: int
    rounds: int
    eval_limit: int | None


def run_bench(args: BenchArgs, console) -> list[dict]:
    """One record per contender: latency statistics, top-1 / top-5, machine facts."""
    from rich.progress import Progress

    from compile.models import data_dir, load_model, model_spec
    from results import peers
    from results.timing import interleaved_latency_ms
    from runtime.bench import machine_facts
    from runtime.evaluate import read_labels
    from runtime.preprocess import Preprocess

    model = load_model(args.model)
    spec = model_spec(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        contenders = {
            "pytorch-eager-fp32": peers.pytorch_eager(model, args.threads),
            "onnxruntime-fp32": peers.onnxruntime_fp32(model, args.threads, Path(tmp)),
            **{f"edgevit:{b.name}": peers.edgevit_bundle(b) for b in args.bundles},
        }
        images = data_dir() / "imagenet_val_1300"
        rows = read_labels(images / "labels.csv", skip=CALIBRATION_ROWS, limit=args.eval_limit)
        preprocess = Preprocess(spec.image_size, int(spec.image_size / spec.crop_pct), spec.mean, spec.std)
        labels = np.array([label for _, label in rows])
        top5 = {name: np.empty((len(rows), 5), dtype=np.int64) for name in contenders}
        x = np.random.default_rng(0).standard_normal((1, 3, spec.image_size, spec.image_size)).astype(np.float32)
        with Progress(console=console) as progress:
            task = progress.add_task("latency (interleaved)", total=args.rounds)
            latency = interleaved_latency_ms({n: (lambda f=f: f(x)) for n, f in contenders.items()},
                                             rounds=args.rounds, progress=lambda: progress.advance(task))
            task = progress.add_task("evaluate", total=len(rows))
            for i, (name, _) in enumerate(rows):
                batch = preprocess.load(images / "images" / name)[None]
                for contender, run in contenders.items():
                    top5[contender][i] = np.argsort(-run(batch)[0])[:5]
                progress.advance(task)
    facts = machine_facts()
    return [
        {"contender": name, "model": args.model, **latency[name],
         "top1": float((top5[name][:, 0] == labels).mean()), "top5": float((top5[name] == labels[:, None]).any(1).mean()),
         "n_images": len(rows), "threads": args.threads, "cpu": facts["cpu"], "machine": platform.machine()}
        for name in contenders
    ]


def markdown_table(records: list[dict]) -> str:
    ort = next(r for r in records if r["contender"] == "onnxruntime-fp32")["median_ms"]
    lines = [
        f"{records[0]['model']}, batch 1, {records[0]['threads']} threads, {records[0]['cpu']} ({records[0]['machine']}); "
        f"accuracy on {records[0]['n_images']} evaluation images (labels.csv rows {CALIBRATION_ROWS + 1}..)",
        "",
        "| contender | median ms | p90 ms | vs ONNX Runtime FP32 | top-1 | top-5 |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(f"| {r['contender']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['median_ms'] / ort:.2f}x | "
                     f"{r['top1'] * 100:.2f}% | {r['top5'] * 100:.2f}% |")
    return "\n".join(lines) + "\n"
