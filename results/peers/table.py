"""The bench records as a markdown table (speed-ups vs ONNX Runtime FP32 and its fastest INT8) and a plot."""

from __future__ import annotations

import json
from pathlib import Path

from results.model_weights import RANDOM_INIT_NOTE
from results.records import save_figure

FAMILY_COLORS = {"edgevit": "tab:red", "edgevit-native": "darkred",
                 "onnxruntime": "tab:blue", "pytorch": "tab:gray", "executorch": "tab:green",
                 "litert": "tab:orange"}


def ort_fp32(records: list[dict]) -> dict | None:
    """The ONNX Runtime FP32 record (the baseline), if it ran."""
    return next((r for r in records if r["contender"] == "onnxruntime-fp32" and r["status"] == "ok"), None)


def best_ort_int8(records: list[dict]) -> dict | None:
    """The fastest ONNX Runtime INT8 recipe of the run (by median latency), if any ran."""
    int8 = [r for r in records
            if r["status"] == "ok" and r["runtime"] == "onnxruntime" and r["recipe"]["quant"] != "none"]
    return min(int8, key=lambda r: r["median_ms"], default=None)


def _spin_note(spin_wait: bool) -> str:
    if spin_wait:
        return ("every runtime's default thread pool (spin-waiting), each turn after a 50 ms pause and an untimed "
                "run so the previous contender's pool is asleep")
    return ("no thread pool spin-waits (ONNX Runtime allow_spinning=0, TVM_THREAD_POOL_SPIN_COUNT=0, "
            "OMP_WAIT_POLICY=PASSIVE; XNNPACK's pool has no such setting)")


def _speedup(record: dict, key: str) -> str:
    return f"{record[key]:.2f}x" if key in record else "-"


def _memory(record: dict) -> str:
    if "peak_rss_growth_mb" in record:
        return f"{record['peak_rss_mb']:.0f} (+{record['peak_rss_growth_mb']:.0f})"
    if "peak_rss_mb" in record:  # a native runner: no interpreter under it
        return f"{record['peak_rss_mb']:.0f}"
    return record.get("peak_rss_error", "-")


def markdown_table(records: list[dict]) -> str:
    """Header with machine facts, one row per contender, then each contender's recipe. A random-init model
    (no stored weights) has no accuracy columns: its table says so instead."""
    first = records[0]
    scored = not first.get("random_init", False)
    best = best_ort_int8(records)
    best_name = f" ({best['contender']})" if best else ""
    accuracy = (f"top-1 / top-5 on {first['n_images']} evaluation images ({first['split']})" if scored else
                f"weights: {RANDOM_INIT_NOTE} (no weights of this model on this machine; every contender loads the "
                "same seeded random init)")
    lines = [
        (f"{first['model']}, batch 1, {first['threads']} threads, {first['cpu']} ({first['machine']}), "
         f"{first['time_utc']}; {accuracy}. "
         f"Latency: contenders interleaved in one process, {_spin_note(first['spin_wait'])}; "
         "peak RSS MB: each alone in a fresh process (growth over the bare interpreter in brackets). "
         "`-native` rows: the bundle's own bin/edgevit-run in its own process (its bench loop right after the "
         "interleaved phase, as many timed runs; its own decoding and resampling for top-1; peak RSS of the whole "
         "runner)."),
        "",
        (f"| contender | median ms | p90 ms | vs ONNX Runtime FP32 | vs best ONNX Runtime INT8{best_name} | "
         "peak RSS MB |" + (" top-1 | top-5 |" if scored else "")),
        "|---|---|---|---|---|---|" + ("---|---|" if scored else ""),
    ]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['contender']} | not available: {r['reason']} | | | | |" + (" | |" if scored else ""))
            continue
        lines.append(f"| {r['contender']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{_speedup(r, 'speedup_vs_ort_fp32')} | {_speedup(r, 'speedup_vs_best_ort_int8')} | "
                     f"{_memory(r)} |" + (f" {r['top1'] * 100:.2f}% | {r['top5'] * 100:.2f}% |" if scored else ""))
    lines += ["", "Recipes:", ""]
    lines += [f"- {r['contender']}: `{json.dumps(r['recipe'], sort_keys=True)}`"
              for r in records if r["status"] == "ok"]
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    """Top-1 vs median latency: one numbered point per contender, coloured by runtime, names in a key
    beside the axes (points of many ONNX Runtime recipes sit too close for labels on the points).
    A random-init model has no top-1: its points are median latency against the contender's number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r["status"] == "ok"]
    scored = not records[0].get("random_init", False)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for i, r in enumerate(ok, 1):
        y = r["top1"] * 100 if scored else i
        ax.scatter(r["median_ms"], y, color=FAMILY_COLORS.get(r["runtime"], "black"), zorder=3)
        ax.annotate(str(i), (r["median_ms"], y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    for family, color in FAMILY_COLORS.items():
        if any(r["runtime"] == family for r in ok):
            ax.scatter([], [], color=color, label=family)
    ax.legend(fontsize=8, loc="lower right")
    key = "\n".join(f"{i}: {r['contender']}" for i, r in enumerate(ok, 1))
    ax.text(1.02, 1.0, key, transform=ax.transAxes, fontsize=7, va="top", family="monospace")
    ax.set_xlabel("median latency, batch 1 (ms)")
    ax.set_ylabel(f"top-1 (%), {ok[0]['n_images'] if ok else 0} evaluation images" if scored
                  else f"contender (see key; {RANDOM_INIT_NOTE})")
    ax.set_title(f"{records[0]['model']}: {records[0]['threads']} threads, {records[0]['cpu']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
