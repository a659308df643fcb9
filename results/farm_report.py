"""Farm report: JSONL records (python -m remote bench) -> a markdown table per board and bundle + plots."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from results.records import read_jsonl, save_figure, write_atomic
from runtime.errors import EdgevitError


def load_records(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        try:
            records += read_jsonl(path)
        except FileNotFoundError:
            raise EdgevitError(f"results file not found: {path}") from None
        except ValueError as err:
            raise EdgevitError(f"results file {path} is not JSON lines ({err})") from None
    if not records:
        raise EdgevitError("no records in " + ", ".join(map(str, paths)))
    return records


def _latest(records: list[dict]) -> dict[tuple[str, str], dict]:
    """The newest record per (board, bundle)."""
    latest = {}
    for record in sorted(records, key=lambda r: r.get("time_utc", "")):
        latest[(record.get("board", "?"), record.get("bundle", "?"))] = record
    return latest


def markdown(records: list[dict]) -> str:
    """One table per bundle, a row per board (errors shown as such)."""
    by_bundle = defaultdict(list)
    for (_board, bundle), record in sorted(_latest(records).items()):
        by_bundle[bundle].append(record)
    lines = ["# Farm results", ""]
    for bundle, rows in by_bundle.items():
        lines += [f"## {bundle}", "",
                  "| board | preset | median ms | p90 ms | peak RSS MB | power W | mJ / inference | status |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.get("status") != "ok":
                lines.append(f"| {r['board']} | {r.get('preset', '')} | | | | | | error: {r.get('error', '')} |")
                continue
            power = f"{r['power_mean_w']:.2f}" if "power_mean_w" in r else "-"
            energy = f"{r['energy_per_inference_mj']:.1f}" if "energy_per_inference_mj" in r else "-"
            lines.append(f"| {r['board']} | {r.get('preset', '')} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {power} | {energy} | ok |")
        lines.append("")
    return "\n".join(lines)


def plots(records: list[dict], out_dir: Path) -> list[Path]:
    """Bar charts of median latency and energy per inference per (board, bundle)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in _latest(records).values() if r.get("status") == "ok"]
    written = []
    for field, label, name in (("median_ms", "median latency (ms)", "latency.png"),
                               ("energy_per_inference_mj", "energy per inference (mJ)", "energy.png")):
        rows = [r for r in ok if field in r]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(max(4, len(rows) * 1.2), 3.5))
        ax.bar([f"{r['board']}\n{r['bundle']}" for r in rows], [r[field] for r in rows])
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        save_figure(fig, out_dir / name, dpi=110)
        written.append(out_dir / name)
    return written


def write_farm_report(paths: list[Path], out_dir: Path) -> Path:
    """report.md (a table per bundle, a row per board) and its plots in `out_dir`; returns the report's path."""
    records = load_records(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plots(records, out_dir)
    text = markdown(records) + "".join(f"\n![{p.stem}]({p.name})\n" for p in images)
    write_atomic(out_dir / "report.md", text)
    return out_dir / "report.md"
