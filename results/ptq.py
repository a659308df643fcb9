"""PTQ table: top-1 of every quantization recipe, with and without ToMe, against compiled FP32.

Each variant is a real compile (python -m compile's pipeline) for the host; all bundles are then
evaluated on the evaluation split (labels.csv rows after the 256 calibration rows), image by image.
Calibration runs once per ToMe schedule (its statistics do not depend on the recipe).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compile.data import CALIBRATION_ROWS
from results.records import save_figure


@dataclass(frozen=True)
class Variant:
    """One row of the table: a name and the compile arguments that make it."""

    name: str
    quant: str = "int8"
    options: dict = field(default_factory=dict)  # QuantConfig fields: observer, outliers, fc2_groups, ...


VARIANTS = {v.name: v for v in (
    Variant("fp32", quant="fp32"),
    Variant("naive: min-max, per-tensor weights, no outlier handling",
            options={"observer": "minmax", "outliers": False, "weight_scales": "tensor"}),
    Variant("int8, outliers off", options={"outliers": False}),
    Variant("int8 (default: mse, LayerNorm per-channel scales)"),
    Variant("int8, min-max observer", options={"observer": "minmax"}),
    Variant("int8, percentile observer", options={"observer": "percentile"}),
    Variant("int8 + Tender fc2 groups (3)", options={"fc2_groups": 3}),
    Variant("int8 + keep 2 layers float", options={"keep_float": 2}),
    Variant("int8-full, outliers off", quant="int8-full", options={"outliers": False}),
    Variant("int8-full (default)", quant="int8-full"),
)}


@dataclass(frozen=True)
class PtqArgs:
    model: str
    r_values: tuple[int, ...]
    variants: tuple[str, ...]
    build_dir: Path
    calib_count: int = CALIBRATION_ROWS  # the whole calibration split (QuantConfig.calib_count)
    eval_limit: int | None = None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:48]


def run_ptq(args: PtqArgs, console) -> list[dict]:
    """Compile every (r, variant), evaluate all of them; one record each."""
    from rich.progress import Progress

    from compile.data import evaluation_rows, labelled_images
    from compile.pipeline import CompileArgs, compile_bundle
    from compile.quant.config import QuantConfig
    from results.scoring import top5_predictions
    from runtime.bundle import CORE, read_manifest
    from runtime.model import Model
    from runtime.preprocess import Preprocess

    bundles = {}
    for r in args.r_values:
        for name in args.variants:
            variant = VARIANTS[name]
            out = args.build_dir / f"{args.model}-tome{r}-{_slug(name)}"
            console.print(f"[bold]r={r} {name}[/bold] -> {out}")
            quant = QuantConfig(mode=variant.quant, calib_count=args.calib_count, **variant.options)
            compile_args = CompileArgs(target="host", model=args.model, quant=quant, tome_r=str(r), out=out)
            bundles[(r, name)] = compile_bundle(compile_args, log=lambda m: console.print("  " + m))
    sessions = {key: Model(path) for key, path in bundles.items()}
    manifests = {key: read_manifest(path) for key, path in bundles.items()}
    images = labelled_images()
    rows = evaluation_rows(args.eval_limit)
    labels = np.array([label for _, label in rows])
    models = {key: (s.run_tensor, Preprocess.from_manifest(manifests[key].input, bundles[key] / CORE))
              for key, s in sessions.items()}
    with Progress(console=console) as progress:
        task = progress.add_task("evaluate", total=len(rows))
        top5 = top5_predictions(models, images / "images", rows, lambda: progress.advance(task))
    return _records(args, bundles, manifests, top5, labels)


def _records(args: PtqArgs, bundles, manifests, top5, labels) -> list[dict]:
    from runtime.bench import machine_facts
    from runtime.evaluate import accuracy

    fp32_r0 = top5.get((args.r_values[0], "fp32")) if "fp32" in args.variants else None
    records = []
    for (r, name), predictions in top5.items():
        fp32_same_r = top5.get((r, "fp32"))
        top1, top5_rate = accuracy(predictions, labels)
        manifest = manifests[(r, name)]
        records.append({
            "model": args.model, "tome_r": r, "variant": name, "quant": manifest.quant.mode,
            "recipe": manifest.quant.recipe,
            "float_layers": [n for n, layer in manifest.quant.layers.items() if layer["format"] == "float32"],
            "top1": top1, "top5": top5_rate,
            "drop_vs_fp32": None if fp32_r0 is None else accuracy(fp32_r0, labels)[0] - top1,
            "agreement_with_fp32_same_r": None if fp32_same_r is None else float(
                (predictions[:, 0] == fp32_same_r[:, 0]).mean()),
            "model_so_bytes": (bundles[(r, name)] / "model.so").stat().st_size,
            "n_images": len(labels), "split": f"labels.csv rows {CALIBRATION_ROWS + 1}..",
            "calib_images": args.calib_count, "cpu": machine_facts()["cpu"], "machine": platform.machine(),
        })
    return records


def markdown_table(records: list[dict]) -> str:
    r_values = sorted({rec["tome_r"] for rec in records})
    by_key = {(rec["tome_r"], rec["variant"]): rec for rec in records}
    variants = list(dict.fromkeys(rec["variant"] for rec in records))
    first = records[0]
    lines = [
        (f"PTQ: {first['model']} on the host; top-1 on {first['n_images']} evaluation images ({first['split']}), "
         f"calibration on {first['calib_images']} other images; drop = compiled FP32 (r=0) top-1 minus this top-1"),
        "",
        "| recipe | " + " | ".join(f"r={r} top-1 | r={r} drop | r={r} agree w/ FP32" for r in r_values)
        + " | model.so MB |",
        "|---|" + "---|---|---|" * len(r_values) + "---|",
    ]
    for name in variants:
        cells = []
        for r in r_values:
            rec = by_key.get((r, name))
            if rec is None:
                cells.append("- | - | -")
                continue
            drop = "-" if rec["drop_vs_fp32"] is None else f"{rec['drop_vs_fp32'] * 100:+.2f}"
            agreement = rec["agreement_with_fp32_same_r"]
            agree = "-" if agreement is None else f"{agreement * 100:.1f}%"
            cells.append(f"{rec['top1'] * 100:.2f}% | {drop} | {agree}")
        size = by_key.get((r_values[0], name), next(rec for rec in records if rec["variant"] == name))["model_so_bytes"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {size / 1e6:.1f} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    """Grouped bars: top-1 per recipe, one bar per ToMe r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(rec["variant"] for rec in records))
    r_values = sorted({rec["tome_r"] for rec in records})
    by_key = {(rec["tome_r"], rec["variant"]): rec["top1"] * 100 for rec in records}
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(variants) + 1.5))
    height = 0.8 / len(r_values)
    for j, r in enumerate(r_values):
        ys = np.arange(len(variants)) + j * height
        ax.barh(ys, [by_key.get((r, v), 0) for v in variants], height=height, label=f"ToMe r={r}")
    ax.set_yticks(np.arange(len(variants)) + 0.4 - height / 2, variants, fontsize=8)
    low = min(by_key.values())
    ax.set_xlim(max(0, low - 2), max(by_key.values()) + 1)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 (%) on the evaluation split")
    ax.set_title(f"PTQ recipes: {records[0]['model']}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
