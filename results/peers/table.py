"""The bench records as a markdown table (speed-ups vs the device's baselines) and a plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from results.model_weights import RANDOM_INIT_NOTE
from results.records import save_figure

FAMILY_COLORS = {"edgevit": "tab:red", "edgevit-native": "darkred",
                 "onnxruntime": "tab:blue", "pytorch": "tab:gray", "executorch": "tab:green",
                 "litert": "tab:orange", "tensorrt": "tab:purple"}


def ort_fp32(records: list[dict]) -> dict | None:
    """The ONNX Runtime FP32 record (the baseline), if it ran."""
    return next((r for r in records if r["contender"] == "onnxruntime-fp32" and r["status"] == "ok"), None)


def best_ort_int8(records: list[dict]) -> dict | None:
    """The fastest ONNX Runtime INT8 recipe of the run (by median latency), if any ran."""
    int8 = [r for r in records
            if r["status"] == "ok" and r["runtime"] == "onnxruntime" and r["recipe"]["quant"] != "none"]
    return min(int8, key=lambda r: r["median_ms"], default=None)


def ort_cuda_fp32(records: list[dict]) -> dict | None:
    """The ONNX Runtime CUDA FP32 record (the GPU baseline), if it ran."""
    return next((r for r in records if r["contender"] == "onnxruntime-cuda-fp32" and r["status"] == "ok"), None)


def best_tensorrt(records: list[dict]) -> dict | None:
    """The fastest TensorRT engine of the run (by median latency), if any ran."""
    engines = [r for r in records if r["status"] == "ok" and r["runtime"] == "tensorrt"]
    return min(engines, key=lambda r: r["median_ms"], default=None)


@dataclass(frozen=True)
class Baseline:
    """What every contender's speed-up is taken against: records get `speedup_vs_<key>`, the table a column."""

    key: str
    title: str  # the column is "vs <title>"
    pick: Callable[[list[dict]], dict | None]
    fastest_of_several: bool = False  # the pick is named (records: `<key>`, the column title)


BASELINES = {
    "cpu": (Baseline("ort_fp32", "ONNX Runtime FP32", ort_fp32),
            Baseline("best_ort_int8", "best ONNX Runtime INT8", best_ort_int8, fastest_of_several=True)),
    "cuda": (Baseline("ort_cuda_fp32", "ONNX Runtime CUDA FP32", ort_cuda_fp32),
             Baseline("best_tensorrt", "best TensorRT", best_tensorrt, fastest_of_several=True)),
}


def _device(records: list[dict]) -> str:
    return records[0].get("device", "cpu")  # records of runs before --device are CPU ones


def baselines(records: list[dict]) -> list[tuple[Baseline, dict]]:
    """The baselines of the records' device that ran, each with its record."""
    return [(b, picked) for b in BASELINES[_device(records)] if (picked := b.pick(records)) is not None]


def _gpu_note(first: dict) -> str:
    """Where a cuda run ran: the GPU facts that could be read (results.peers.cuda_device.gpu_facts)."""
    g = first["gpu_facts"]

    def mhz(key: str) -> str:
        return "?" if g.get(key) is None else f"{g[key]:.0f}"

    return (f"{g['gpu'] or 'unknown GPU'} (compute capability {g['compute_capability'] or '?'}, driver "
            f"{g['driver_version'] or '?'} for CUDA {g['cuda_driver'] or '?'}, torch's CUDA runtime "
            f"{g['cuda_runtime_torch'] or '?'}, SM clock "
            f"{mhz('sm_clock_mhz')} / max {mhz('max_sm_clock_mhz')} MHz, memory clock {mhz('mem_clock_mhz')} / max "
            f"{mhz('max_mem_clock_mhz')} MHz; facts from {g['facts_from']}), edgevit bundles for {first['edgevit_target']}, "
            f"host {first['cpu']} ({first['machine']})")


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
    cuda = _device(records) == "cuda"
    scored = not first.get("random_init", False)
    picked = {b.key: r for b, r in baselines(records)}
    columns = [f"vs {b.title}" + (f" ({picked[b.key]['contender']})" if b.fastest_of_several and b.key in picked else "")
               for b in BASELINES[_device(records)]]
    accuracy = (f"top-1 / top-5 on {first['n_images']} evaluation images ({first['split']})" if scored else
                f"weights: {RANDOM_INIT_NOTE} (no weights of this model on this machine; every contender loads the "
                "same seeded random init)")
    where = (_gpu_note(first) if cuda else f"{first['threads']} threads, {first['cpu']} ({first['machine']})")
    timing = ("every call numpy in, logits out: the input copied to the GPU and the logits back, so each call ends "
              "with the GPU done" if cuda else _spin_note(first['spin_wait']))
    lines = [
        (f"{first['model']}, batch 1, {where}, {first['time_utc']}; {accuracy}. "
         f"Latency: contenders interleaved in one process, {timing}; "
         f"peak RSS MB: each alone in a fresh process{' (host memory)' if cuda else ''} (growth over the bare "
         "interpreter in brackets). "
         "`-native` rows: the bundle's own bin/edgevit-run in its own process (its bench loop right after the "
         "interleaved phase, as many timed runs; its own decoding and resampling for top-1; peak RSS of the whole "
         "runner)."),
        "",
        (f"| contender | median ms | p90 ms | {' | '.join(columns)} | peak RSS MB |" + (" top-1 | top-5 |" if scored else "")),
        "|---|---|---|" + "---|" * len(columns) + "---|" + ("---|---|" if scored else ""),
    ]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['contender']} | not available: {r['reason']} | |" + " |" * len(columns) + " |"
                         + (" | |" if scored else ""))
            continue
        speedups = " | ".join(_speedup(r, f"speedup_vs_{b.key}") for b in BASELINES[_device(records)])
        lines.append(f"| {r['contender']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {speedups} | "
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
    where = (records[0]["gpu_facts"]["gpu"] or "unknown GPU" if _device(records) == "cuda"
             else f"{records[0]['threads']} threads, {records[0]['cpu']}")
    ax.set_title(f"{records[0]['model']}: {where}", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
