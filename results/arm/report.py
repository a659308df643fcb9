"""Records, markdown table and plot of `results arm`: instructions per inference by class and kernel, with the
estimated latency on the real board and the estimator's error against published figures."""

from __future__ import annotations

from pathlib import Path

from results.arm.boards import ArmBoard
from results.arm.contenders import PARALLEL, Counted
from results.arm.count import CLASS_TITLES, CLASSES
from results.arm.estimate import estimated_ms
from results.records import save_figure

TOP_KERNELS = 12
REFERENCE = "litert-int8"  # the ratios in the table are against this contender when it ran
CLASS_COLORS = {"dot": "tab:red", "mul": "tab:pink", "asimd": "tab:orange", "fp": "tab:green", "load": "tab:blue",
                "store": "tab:cyan", "scalar": "tab:gray", "branch": "black"}


def record(counted: Counted, board: ArmBoard) -> dict:
    """The JSON record of one contender on `board`."""
    count = counted.count
    ms = estimated_ms(count, board, PARALLEL[counted.kind])
    rec = {
        "board": board.preset, "cpu": board.qemu_cpu, "clock_ghz": board.clock_ghz, "name": counted.name,
        "kind": counted.kind, "instructions": round(count.instructions), "macs": round(counted.macs),
        "instructions_per_mac": round(count.instructions / counted.macs, 4),
        "classes": {cls: round(n) for cls, n in count.classes.items()},
        "load_bytes": round(count.load_bytes), "store_bytes": round(count.store_bytes),
        "estimated_ms": {str(n): round(v, 2) for n, v in ms.items()}, "top1": counted.top1,
        "top_kernels": [{"library": k.library, "name": k.name, "instructions": round(k.instructions),
                         "classes": {c: round(v) for c, v in k.classes.items()}} for k in count.kernels[:TOP_KERNELS]],
        "details": counted.details,
    }
    for published in board.published:
        if published.contender == counted.name:
            rec["published"] = {"latency_ms": published.latency_ms, "source": published.source,
                                "differs": published.differs,
                                "error_pct": {n: round(100 * (v / published.latency_ms - 1), 1) for n, v in
                                              rec["estimated_ms"].items()}}
    return rec


def _millions(n: float) -> str:
    return f"{n / 1e6:.1f}"


def markdown_table(records: list[dict]) -> str:
    """One table per run (contenders x classes, estimates), the top kernels of each, the estimator's error."""
    first = records[0]
    reference = next((r for r in records if r["name"] == REFERENCE), None)
    head = ["contender", "instructions (M)", "per MAC", *(CLASS_TITLES[c] for c in CLASSES), "loaded MB", "stored MB",
            *(f"est. ms, {n} thread{'s' * (n != '1')}" for n in first["estimated_ms"]), "top-1"]
    if reference:
        head[2:2] = [f"instr. vs {REFERENCE}", f"est. ms vs {REFERENCE}"]
    lines = [f"Instructions per inference on the emulated {first['board']} ({first['cpu']}, {first['clock_ghz']} GHz for "
             "the estimates), batch 1, one thread, counted in qemu (results/arm); classes in millions", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        row = [r["name"], _millions(r["instructions"]), f"{r['instructions_per_mac']:.3f}",
               *(_millions(r["classes"][c]) for c in CLASSES), f"{r['load_bytes'] / 1e6:.1f}",
               f"{r['store_bytes'] / 1e6:.1f}", *(f"{v:.1f}" for v in r["estimated_ms"].values()), str(r["top1"])]
        if reference:
            row[2:2] = [f"{r['instructions'] / reference['instructions']:.2f}x",
                        f"{r['estimated_ms']['1'] / reference['estimated_ms']['1']:.2f}x"]
        lines.append("| " + " | ".join(row) + " |")
    for r in records:
        lines += ["", f"Top functions of {r['name']} (M instructions per inference):", "",
                  "| function | library | M | share | largest classes |", "|---|---|---|---|---|"]
        for k in r["top_kernels"]:
            largest = sorted(k["classes"].items(), key=lambda kv: -kv[1])[:3]
            classes = ", ".join(f"{c} {_millions(n)}" for c, n in largest)
            lines.append(f"| `{k['name'][:110]}` | {k['library']} | {_millions(k['instructions'])} | "
                         f"{100 * k['instructions'] / r['instructions']:.1f}% | {classes} |")
    for r in records:
        if "gemm_shapes" in r:
            lines += _gemm_shape_table(r)
    errors = [r for r in records if "published" in r]
    if errors:
        lines += ["", "Estimator against published measurements on the real board:", ""]
        for r in errors:
            p = r["published"]
            estimates = ", ".join(f"{n} thread(s) {r['estimated_ms'][n]} ms ({p['error_pct'][n]:+.1f}%)"
                                  for n in r["estimated_ms"])
            lines.append(f"- {r['name']}: published {p['latency_ms']} ms ({p['source']}); estimated {estimates}. "
                         f"Differs: {p['differs']}.")
    return "\n".join(lines) + "\n"


def _gemm_shape_table(r: dict) -> list[str]:
    """Each int8 GEMM shape of the bundle counted alone, against its SDOT floor where the board has SDOT."""
    shapes = r["gemm_shapes"]
    floor = "floor" in shapes[0]
    head = ["shape", "batch x M x K x N", "lhs", "tile", "instructions", "SDOTs", "per MAC",
            *(("SDOT floor", "vs floor") if floor else ())]
    lines = ["", f"int8 GEMM shapes of {r['name']}, each counted alone (int32 out; results/arm/gemm_shapes.py):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in shapes:
        row = [s["shape"], f"{s['batch'] or 1} x {s['m']} x {s['k']} x {s['n']}", s["lhs_dtype"],
               f"{s['tile'][0]}x{s['tile'][1]}", f"{s['instructions']:,}", f"{s['dot']:,}", f"{s['instructions_per_mac']:.4f}",
               *((f"{s['floor']:,}", f"{s['vs_floor']:.2f}x") if floor else ())]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def plot(records: list[dict], path: Path) -> None:
    """Instructions per inference by class, one bar per contender, the estimated latency beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.6 * len(records) + 1.8))
    names = [r["name"] for r in records]
    left = [0.0] * len(records)
    for cls in CLASSES:
        values = [r["classes"][cls] / 1e6 for r in records]
        ax.barh(names, values, left=left, color=CLASS_COLORS[cls], label=CLASS_TITLES[cls])
        left = [a + b for a, b in zip(left, values)]
    for y, r in enumerate(records):
        ax.text(left[y], y, f"  {r['estimated_ms']['1']:.1f} ms est.", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("instructions per inference (M)")
    ax.set_title(f"{records[0]['board']} ({records[0]['cpu']}), batch 1, one thread")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
