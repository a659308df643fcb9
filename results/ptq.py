"""PTQ table: top-1 of every quantization recipe, with and without ToMe, against compiled FP32.

Most variants are a real compile (python -m compile's pipeline) for the host, evaluated on the
evaluation split (labels.csv rows after the 256 calibration rows), image by image. W4A8 is compiled
too; the "(simulated)" low-bit rows (W4A8, mixed) are quantized the same way and simulated in torch
(compile.quant.simulate: fake-quantized GEMMs and attention activations in the float model); the
simulated W8A8 beside the compiled int8 shows how close the simulation is. Calibration runs once per
ToMe schedule (its statistics do not depend on the recipe).
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
    simulated: bool = False  # evaluated in torch (compile.quant.simulate), not compiled


def _w4a8(rounding: str, group: int, simulated: bool) -> Variant:
    size = f"g{group}" if group else "per-channel"
    return Variant(f"W4A8 {rounding.upper()} {size}{' (simulated)' if simulated else ''}", quant="w4a8",
                   options={"w4_rounding": rounding, "w4_group": group}, simulated=simulated)


LOW_BIT = (
    *(_w4a8(rounding, group, False) for rounding in ("gptq", "rtn") for group in (32, 64, 128, 0)),
    _w4a8("block", 32, False),  # GPTQ, then each block's codes learned (~11 min more on two cores)
    Variant("W8A8 (simulated)", simulated=True),
    *(_w4a8(rounding, group, True) for rounding in ("rtn", "gptq") for group in (32, 64, 128, 0)),
    # each block's attention int8 or float32 by the same estimate (compiled: the graph emits float32 and int8 GEMMs)
    Variant("mixed --max-drop 0.5, float32 / int8", quant="mixed", options={"max_drop": 0.5, "formats": ("float32", "int8")}),
    Variant("mixed --max-drop 0.5, host formats", quant="mixed", options={"max_drop": 0.5}),
    Variant("mixed --max-drop 0.5, host formats (simulated)", quant="mixed", options={"max_drop": 0.5}, simulated=True),
    Variant("mixed --max-drop 1, host formats (simulated)", quant="mixed", options={"max_drop": 1.0}, simulated=True),
    Variant("mixed --max-drop 1, rpi5 formats (simulated)", quant="mixed",
            options={"max_drop": 1.0, "formats": ("float32", "float16", "int8", "w4a8")}, simulated=True),
    Variant("mixed --size-mb 4 (simulated)", quant="mixed", options={"size_mb": 4.0}, simulated=True),
)


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
    *LOW_BIT,
)}
# --variants lowbit: the low-bit rows with their references (compiled FP32 and int8)
VARIANT_SETS = {"all": tuple(VARIANTS), "lowbit": ("fp32", "int8 (default: mse, LayerNorm per-channel scales)",
                                                    *(v.name for v in LOW_BIT))}


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
    """Compile (or simulate) every (r, variant), evaluate all of them; one record each."""
    from rich.progress import Progress

    from compile.data import evaluation_rows, labelled_images
    from results.scoring import top5_predictions

    compiled = [name for name in args.variants if not VARIANTS[name].simulated]
    simulated = [name for name in args.variants if VARIANTS[name].simulated]
    images = labelled_images()
    rows = evaluation_rows(args.eval_limit)
    labels = np.array([label for _, label in rows])
    models, facts = _compiled(args, compiled, console)
    with Progress(console=console) as progress:
        task = progress.add_task("evaluate", total=len(rows))
        top5 = top5_predictions(models, images / "images", rows, lambda: progress.advance(task)) if models else {}
    sim_top5, sim_facts = _simulated(args, simulated, rows, console)
    return _records(args, top5 | sim_top5, facts | sim_facts, labels)


def _compiled(args: PtqArgs, names: list[str], console) -> tuple[dict, dict]:
    """Compile the host bundles: ({(r, name): (run, preprocess)}, {(r, name): facts for the record})."""
    from compile.pipeline import CompileArgs, compile_bundle
    from compile.quant.config import QuantConfig
    from runtime.bundle import CORE, read_manifest
    from runtime.model import Model
    from runtime.preprocess import Preprocess

    models, facts = {}, {}
    for r in args.r_values:
        for name in names:
            variant = VARIANTS[name]
            out = args.build_dir / f"{args.model}-tome{r}-{_slug(name)}"
            console.print(f"[bold]r={r} {name}[/bold] -> {out}")
            quant = QuantConfig(mode=variant.quant, calib_count=args.calib_count, **variant.options)
            compile_args = CompileArgs(target="host", model=args.model, quant=quant, tome_r=str(r), out=out)
            bundle = compile_bundle(compile_args, log=lambda m: console.print("  " + m))
            manifest = read_manifest(bundle)
            models[(r, name)] = (Model(bundle).run_tensor, Preprocess.from_manifest(manifest.input, bundle / CORE))
            facts[(r, name)] = {"quant": manifest.quant.mode, "recipe": manifest.quant.recipe,
                                "layer_formats": {n: layer["format"] for n, layer in manifest.quant.layers.items()}
                                | _attention_formats(manifest.quant.recipe),
                                "model_so_bytes": (bundle / "model.so").stat().st_size, "parameter_bytes": None}
    return models, facts


def _simulated(args: PtqArgs, names: list[str], rows, console) -> tuple[dict, dict]:
    """Quantize and simulate in torch (batches of 32): ({(r, name): top-5 [n, 5]}, {(r, name): facts})."""
    import copy

    import torch
    from rich.progress import Progress

    from compile.data import labelled_images
    from compile.model.models import load_model, model_spec
    from compile.model.tome_patch import apply_tome
    from compile.model.vit import describe
    from compile.quant.calibration import load_images
    from compile.quant.config import QuantConfig
    from compile.quant.mofq import parameter_bytes
    from compile.quant.quantize import quantize
    from compile.quant.simulate import simulated_model

    if not names:
        return {}, {}
    model, spec = load_model(args.model).eval(), model_spec(args.model)
    images = load_images([labelled_images() / "images" / file for file, _ in rows], spec.preprocess())
    top5, facts = {}, {}
    for r in args.r_values:
        schedule = [r] * len(model.blocks)
        running = apply_tome(copy.deepcopy(model), schedule) if r else model
        vit = describe(model, schedule, spec.mean, spec.std)
        for name in names:
            variant = VARIANTS[name]
            console.print(f"[bold]r={r} {name}[/bold] (torch)")
            config = QuantConfig(mode=variant.quant, calib_count=args.calib_count, **variant.options)
            qvit, formats = quantize(model, vit, spec, config, lambda m: console.print("  " + m), config.formats)
            sim = simulated_model(running, qvit, formats)
            with torch.inference_mode(), Progress(console=console, transient=True) as progress:
                task = progress.add_task("evaluate", total=len(images))
                batches = []
                for start in range(0, len(images), 32):
                    batches.append(sim(torch.from_numpy(images[start:start + 32])).topk(5, dim=-1).indices)
                    progress.advance(task, len(batches[-1]))
            top5[(r, name)] = torch.cat(batches).numpy()
            facts[(r, name)] = {"quant": config.mode, "recipe": qvit.recipe,
                                "layer_formats": {linear.name: formats[linear.name] for linear in qvit.linears()}
                                | _attention_formats(qvit.recipe),
                                "model_so_bytes": None, "parameter_bytes": parameter_bytes(qvit, formats, config)}
    return top5, facts


def _attention_formats(recipe: dict) -> dict[str, str]:
    """The attention matmuls' formats --quant mixed chose (other recipes: none; their attention follows the mode)."""
    return recipe.get("choice", {}).get("attention_formats", {})


def _records(args: PtqArgs, top5, facts, labels) -> list[dict]:
    from runtime.bench import machine_facts
    from runtime.evaluate import accuracy

    fp32_r0 = top5.get((args.r_values[0], "fp32")) if "fp32" in args.variants else None
    records = []
    for (r, name), predictions in top5.items():
        fp32_same_r = top5.get((r, "fp32"))
        top1, top5_rate = accuracy(predictions, labels)
        fact = facts[(r, name)]
        records.append({
            "model": args.model, "tome_r": r, "variant": name, "quant": fact["quant"], "recipe": fact["recipe"],
            "simulated": VARIANTS[name].simulated, "layer_formats": fact["layer_formats"],
            "float_layers": [n for n, fmt in fact["layer_formats"].items() if fmt == "float32"],
            "top1": top1, "top5": top5_rate,
            "drop_vs_fp32": None if fp32_r0 is None else accuracy(fp32_r0, labels)[0] - top1,
            "drop_standard_error": None if fp32_r0 is None else paired_standard_error(fp32_r0, predictions, labels),
            "agreement_with_fp32_same_r": None if fp32_same_r is None else float(
                (predictions[:, 0] == fp32_same_r[:, 0]).mean()),
            "model_so_bytes": fact["model_so_bytes"], "parameter_bytes": fact["parameter_bytes"],
            "n_images": len(labels), "split": f"labels.csv rows {CALIBRATION_ROWS + 1}..",
            "calib_images": args.calib_count, "cpu": machine_facts()["cpu"], "machine": platform.machine(),
        })
    return records


def paired_standard_error(reference: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> float:
    """Standard error of a top-1 drop measured on the same images: of the mean of (reference right) - (this right)
    per image. Only the images the two disagree on add to it, so recipes close to the reference are told apart
    more finely than two independent top-1 errors would allow."""
    difference = (reference[:, 0] == labels).astype(float) - (predictions[:, 0] == labels)
    return float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0


def markdown_table(records: list[dict]) -> str:
    r_values = sorted({rec["tome_r"] for rec in records})
    by_key = {(rec["tome_r"], rec["variant"]): rec for rec in records}
    variants = list(dict.fromkeys(rec["variant"] for rec in records))
    first = records[0]
    lines = [
        (f"PTQ: {first['model']} on the host; top-1 on {first['n_images']} evaluation images ({first['split']}), "
         f"calibration on {first['calib_images']} other images; drop = compiled FP32 (r=0) top-1 minus this top-1, "
         "± its standard error on these images (paired); "
         "(simulated): fake-quantized in torch, not compiled; params MB: GEMM weights in their formats with their "
         "scales, plus every other parameter in float32"),
        "",
        "| recipe | " + " | ".join(f"r={r} top-1 | r={r} drop | r={r} agree w/ FP32" for r in r_values)
        + " | model.so MB | params MB | GEMM formats |",
        "|---|" + "---|---|---|" * len(r_values) + "---|---|---|",
    ]
    for name in variants:
        cells = []
        for r in r_values:
            rec = by_key.get((r, name))
            if rec is None:
                cells.append("- | - | -")
                continue
            drop = "-" if rec["drop_vs_fp32"] is None else f"{rec['drop_vs_fp32'] * 100:+.2f}"
            if rec.get("drop_standard_error"):
                drop += f" ± {rec['drop_standard_error'] * 100:.2f}"
            agreement = rec["agreement_with_fp32_same_r"]
            agree = "-" if agreement is None else f"{agreement * 100:.1f}%"
            cells.append(f"{rec['top1'] * 100:.2f}% | {drop} | {agree}")
        rec = by_key.get((r_values[0], name), next(rec for rec in records if rec["variant"] == name))
        sizes = [_megabytes(rec.get(key)) for key in ("model_so_bytes", "parameter_bytes")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sizes[0]} | {sizes[1]} | {_format_counts(rec)} |")
    return "\n".join(lines + _choices(records)) + "\n"


def _megabytes(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.2f}"


def _format_counts(record: dict) -> str:
    formats = list((record.get("layer_formats") or {}).values())
    return ", ".join(f"{fmt} x{formats.count(fmt)}" for fmt in dict.fromkeys(formats)) or "float32 (all)"


def _choices(records: list[dict]) -> list[str]:
    """The per-layer formats --quant mixed chose, with its held-out estimate beside the measured drop."""
    lines = []
    for rec in records:
        choice = rec["recipe"].get("choice")
        if not choice:
            continue
        measured = "-" if rec["drop_vs_fp32"] is None else f"{rec['drop_vs_fp32'] * 100:+.2f}"
        lines += ["", f"**{rec['variant']}, r={rec['tome_r']}**: estimated drop {choice['estimated_drop_points']:+.2f} "
                      f"points on {choice['heldout_images']} held-out calibration images, measured {measured}; "
                      "the estimate of one format everywhere: "
                      + ", ".join(f"{fmt} {v['estimated_drop_points']:+.2f}" for fmt, v in choice["everywhere"].items()), ""]
        for fmt in dict.fromkeys(rec["layer_formats"].values()):
            names = [name for name, f in rec["layer_formats"].items() if f == fmt]
            lines.append(f"- {fmt} ({len(names)}): {', '.join(names)}")
    return lines


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
