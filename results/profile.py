"""Time per kernel of a bundle's inference, grouped by what the kernel does (results.kernel_groups).

TVM 0.27's Relax VM has no built-in profiler (the `profile` executable of older releases is gone);
what it has is `set_instrument`, a function called before and after every Call instruction. So any
existing bundle can be profiled as it is: rounds alternate plain inferences (the total, untouched)
with one instrumented inference that reads the clock around every call. The instrument itself
costs time inside each window (the return to the VM and the call back with its arguments); the
window of `vm.builtin.null_value` (no arguments, no work) measures that cost in the same run and
is subtracted from every window. Arguments converted for the callback add well under a microsecond
per kernel on top (~0.05 us per tensor here), which stays in the kernels' share. Several bundles
take turns in every round, so machine noise hits them alike.

Per kernel: the median over rounds of its corrected window. A kernel's window is tens of
microseconds, so on a shared machine its median is that of calls nobody preempted; a whole
inference is milliseconds and is often preempted (TVM's pool thread loses its core hundreds of
times per run here when other work is running). So the total the kernels are held against is the
10th percentile of the plain runs, the median beside it. The VM and allocation overhead is that
total minus all kernels, so the groups add up to it by construction.
The GEMMs' achieved GMAC/s stand beside two references: the best rate of the bundle's int8 GEMMs
each replayed alone with its inputs in cache (TVM's time_evaluator: a measured peak of these
schedules on this machine), and the ISA peak from /proc/cpuinfo (dot-product MACs per cycle x clock
x threads).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from results.kernel_groups import GROUPS, Call, classify, macs
from results.records import save_figure

VM_PREFIX = "vm.builtin."
NULL_CALL = "vm.builtin.null_value"  # no arguments, no work: its window is the instrument's own cost
PLAIN_PER_ROUND = 5
GEMM_GROUPS = ("int8 GEMM", "fp32 GEMM")
# dot-product MACs per cycle per core: (/proc/cpuinfo flag, AMD cpu family or None for any CPU, MACs, why); the
# first that matches wins; the reason is printed beside the number. Zen 5: the in-cache replay here reaches 864
# GMAC/s on 2 cores, more than 64 MACs/cycle could give at any clock this CPU runs
ISA_MACS_PER_CYCLE = (
    ("amx_int8", None, 1024, "one AMX tdpbusd (16 x 16 x 64 u8 x s8 MACs) per 16 cycles per core"),
    ("avx512_vnni", 26, 128, "Zen 5: two 512-bit vpdpbusd (64 u8 x s8 MACs each) per cycle per core"),
    ("avx512_vnni", None, 64, "one 512-bit vpdpbusd (64 u8 x s8 MACs) per cycle per core (Zen 4: as two halves)"),
    ("avx_vnni", None, 64, "two 256-bit vpdpbusd (32 u8 x s8 MACs each) per cycle per core"),
)


@dataclass(frozen=True)
class ProfileArgs:
    bundles: tuple[Path, ...]
    threads: int
    repeat: int  # rounds: PLAIN_PER_ROUND plain inferences and one instrumented one each


class _Trace:
    """The VM instrument: per call, its name and the clock window around it (ns); tensor shapes on request."""

    def __init__(self, shapes: bool):
        self.shapes = shapes
        self.names: list[str] = []
        self.windows_ns: list[int] = []
        self.args: list[tuple] = []
        self._start = 0

    def __call__(self, func, name, before, ret, *args) -> int:
        if before:
            self._start = time.perf_counter_ns()
            return 0
        self.windows_ns.append(time.perf_counter_ns() - self._start)
        self.names.append(name)
        if self.shapes:
            self.args.append(tuple((tuple(int(d) for d in a.shape), str(a.dtype))
                                   for a in args if hasattr(a, "shape") and hasattr(a, "dtype")))
        return 0


def _instrumented(session, batch, instrument) -> None:
    """One inference with `instrument` called around every VM call."""
    session.vm.set_instrument(instrument)
    try:
        session.run_device(batch)
    finally:
        session.vm.set_instrument(None)


def _traced(session, batch, shapes: bool) -> _Trace:
    trace = _Trace(shapes)
    _instrumented(session, batch, trace)
    return trace


class _VmSession:
    """A CPU bundle's model.so in TVM's Relax VM (pooled allocator, input bound once), as the core runs it, with the
    VM's instrument hook within reach (the core does not expose one)."""

    def __init__(self, path: Path):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        from runtime.bundle import LIBRARY, read_manifest

        self.manifest = read_manifest(path)
        self.library_path = path / LIBRARY
        self.vm = VirtualMachine(tvm.runtime.load_module(str(self.library_path)), tvm.cpu(0), memory_cfg="pooled")
        spec = self.manifest.input
        self.input = tvm.runtime.empty(tuple(spec.shape), spec.dtype, tvm.cpu(0))
        self.vm.set_input("main", self.input)

    def example_batch(self) -> np.ndarray:
        return self.manifest.input.example()

    def run_device(self, batch: np.ndarray):
        self.input.copyfrom(batch)
        self.vm.invoke_stateful("main")
        return self.vm.get_outputs("main")


class _Profiled:
    """One bundle under profile: its session, its call sequence (classified) and what the rounds measured."""

    def __init__(self, path: Path):
        self.path = path
        self.session = _VmSession(path)
        self.batch = self.session.example_batch()
        for _ in range(5):
            self.session.run_device(self.batch)
        self.layout = _traced(self.session, self.batch, shapes=True)
        self.kernels = [i for i, n in enumerate(self.layout.names) if not n.startswith(VM_PREFIX)]
        self.calls = [Call(self.layout.names[i], self.layout.args[i]) for i in self.kernels]
        self.groups = classify(self.calls)
        self.plain_ms: list[float] = []
        self.rounds_us: list[np.ndarray] = []  # per round: corrected window of every kernel call (us)
        self.null_us: list[float] = []

    def round(self) -> None:
        """PLAIN_PER_ROUND plain inferences, then one instrumented."""
        for _ in range(PLAIN_PER_ROUND):
            start = time.perf_counter_ns()
            self.session.run_device(self.batch)
            self.plain_ms.append((time.perf_counter_ns() - start) / 1e6)
        trace = _traced(self.session, self.batch, shapes=False)
        if trace.names != self.layout.names:
            raise RuntimeError(f"bundle {self.path}: the VM called other functions in another run")
        windows = np.array(trace.windows_ns, dtype=np.float64) / 1e3
        nulls = windows[[n == NULL_CALL for n in trace.names]]
        self.null_us.append(float(np.median(nulls)) if nulls.size else 0.0)
        self.rounds_us.append(np.maximum(windows[self.kernels] - self.null_us[-1], 0.0))

    def records(self, threads: int) -> list[dict]:
        """A summary, one record per group, one per distinct kernel (see the module docstring)."""
        per_call = np.array(self.rounds_us)  # [round, kernel call] us
        manifest = self.session.manifest
        common = {"bundle": self.path.name, "model": manifest.model.name, "quant": manifest.quant.mode,
                  "tome_schedule": manifest.tome.schedule, **_facts(threads)}
        summary = _summary(per_call, self.groups, self.calls, self.plain_ms, self.null_us, self.layout.names, common)
        in_cache = _in_cache_rates(self.session, self.calls, self.groups, self.batch)
        best = max(in_cache, key=lambda name: in_cache[name]["gmacs_per_s"], default=None)
        summary["in_cache"] = None if best is None else {"kernel": best, **in_cache[best]}
        return [summary, *_group_records(per_call, self.groups, self.calls, summary, common),
                *_kernel_records(per_call, self.groups, self.calls, in_cache, common)]


def _summary(per_call, groups, calls, plain_ms, null_us, names, common) -> dict:
    total = float(np.percentile(plain_ms, 10))
    kernels_ms = float(np.median(per_call, axis=0).sum() / 1e3)
    medians = np.median(per_call, axis=0) / 1e3
    gemm_ms = float(sum(medians[i] for i, g in enumerate(groups) if g in GEMM_GROUPS))
    attention_ms = float(sum(medians[i] for i, g in enumerate(groups) if g == "attention"))
    vm_calls = Counter(n for n in names if n.startswith(VM_PREFIX))
    return {"kind": "summary", **common, "total_ms": total, "total_median_ms": float(np.median(plain_ms)),
            "total_p90_ms": float(np.percentile(plain_ms, 90)), "n_plain": len(plain_ms), "rounds": len(per_call),
            "kernels_ms": kernels_ms, "kernels_round_p10_ms": float(np.percentile(per_call.sum(axis=1), 10) / 1e3),
            "kernel_calls": len(calls), "vm_calls": dict(vm_calls),
            "instrument_overhead_us": float(np.median(null_us)), "gemm_only_ms": gemm_ms,
            "total_over_gemm_only": total / gemm_ms if gemm_ms else None, "gemm_and_attention_ms": gemm_ms + attention_ms,
            "total_over_gemm_and_attention": total / (gemm_ms + attention_ms) if gemm_ms + attention_ms else None,
            "isa_peak": isa_peak(common["threads"])}


def _group_records(per_call, groups, calls, summary, common) -> list[dict]:
    """One record per group with calls (median ms, spread over rounds, MACs and GMAC/s), then the VM overhead."""
    total = summary["total_ms"]
    records = []
    for group in GROUPS:
        idx = [i for i, g in enumerate(groups) if g == group]
        if not idx:
            continue
        ms = float(np.median(per_call[:, idx], axis=0).sum() / 1e3)
        spread = per_call[:, idx].sum(axis=1) / 1e3
        group_macs = sum(macs(calls[i]) for i in idx)
        records.append({"kind": "group", **common, "group": group, "calls": len(idx), "ms": ms, "share": ms / total,
                        "p10_ms": float(np.percentile(spread, 10)), "p90_ms": float(np.percentile(spread, 90)),
                        "macs": group_macs, "gmacs_per_s": group_macs / ms / 1e6 if group_macs and ms else None})
    overhead = total - sum(r["ms"] for r in records)
    records.append({"kind": "group", **common, "group": "VM and allocation overhead",
                    "calls": sum(summary["vm_calls"].values()), "ms": overhead, "share": overhead / total,
                    "p10_ms": None, "p90_ms": None, "macs": 0, "gmacs_per_s": None})
    return records


def _kernel_records(per_call, groups, calls, in_cache, common) -> list[dict]:
    """One record per distinct kernel name, by time (what to fuse first); int8 GEMMs with their in-cache time."""
    by_name: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        by_name.setdefault(call.name, []).append(i)
    medians = np.median(per_call, axis=0) / 1e3
    records = [{"kind": "kernel", **common, "name": name, "group": groups[idx[0]], "calls": len(idx),
                "ms": float(medians[idx].sum()), "macs": sum(macs(calls[i]) for i in idx),
                "args": [[list(shape), dtype] for shape, dtype in calls[idx[0]].args],
                "in_cache_ms_first_call": in_cache[name]["ms"] if name in in_cache else None}
               for name, idx in by_name.items()]
    return sorted(records, key=lambda r: -r["ms"])


def _in_cache_rates(session, calls, groups, batch) -> dict[str, dict]:
    """Every distinct int8 GEMM replayed alone on copies of its first call's inputs (hot cache, TVM's
    time_evaluator, best of 7 x 20 runs): what its schedule reaches at best, by kernel name."""
    import tvm

    picks = {calls[i].name: calls[i] for i, g in enumerate(groups) if g == "int8 GEMM"}
    captured: dict[str, list] = {}

    def capture(func, name, before, ret, *args) -> int:
        if before and name in picks and name not in captured:
            captured[name] = [a.copyto(tvm.cpu(0)) for a in args if hasattr(a, "shape")]
        return 0

    _instrumented(session, batch, capture)
    library = tvm.runtime.load_module(str(session.library_path))  # the VM keeps no handle on its kernels
    rates = {}
    for name, call in picks.items():
        kernels = next(m for m in library.imports if m.get_function(name, True) is not None)
        seconds = min(kernels.time_evaluator(name, tvm.cpu(0), number=20, repeat=7)(*captured[name]).results)
        rates[name] = {"ms": seconds * 1e3, "gmacs_per_s": macs(call) / seconds / 1e9}
    return rates


def isa_peak(threads: int) -> dict | None:
    """Dot-product peak from /proc/cpuinfo: MACs per cycle of the CPU's best dot-product instruction x 'cpu MHz' x
    threads (None if unknown)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in lines:  # the first processor's fields
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", "").split()
    family = int(fields["cpu family"]) if fields.get("vendor_id") == "AuthenticAMD" and "cpu family" in fields else None
    found = next(((flag, n, why) for flag, amd_family, n, why in ISA_MACS_PER_CYCLE
                  if flag in flags and amd_family in (None, family)), None)
    if found is None or "cpu MHz" not in fields:
        return None
    flag, per_cycle, why = found
    mhz = float(fields["cpu MHz"])
    return {"flag": flag, "macs_per_cycle_per_core": per_cycle, "assumption": why, "cpu_mhz": mhz,
            "threads": threads, "gmacs_per_s": per_cycle * mhz * 1e6 * threads / 1e9}


def _facts(threads: int) -> dict:
    import platform

    import tvm

    from runtime.bench import machine_facts

    facts = machine_facts()
    return {"threads": threads, "cpu": facts["cpu"], "machine": platform.machine(), "hostname": facts["hostname"],
            "tvm": tvm.__version__, "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def run_profile(args: ProfileArgs) -> list[dict]:
    """Records of every bundle; the bundles take turns in every round, so machine noise hits them alike."""
    profiled = [_Profiled(path) for path in args.bundles]
    for _ in range(args.repeat):
        for bundle in profiled:
            bundle.round()
    return [r for bundle in profiled for r in bundle.records(args.threads)]


def _label(summary: dict) -> str:
    schedule = summary["tome_schedule"]
    tome = "" if not any(schedule) else f" + ToMe r={schedule[0]}" if len(set(schedule)) == 1 else " + ToMe"
    return f"{summary['model']} {summary['quant']}{tome}"


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(records: list[dict]) -> str:
    """Per bundle: header with machine facts and spread, the groups table, the top kernels; then the method."""
    lines: list[str] = []
    for summary in (r for r in records if r["kind"] == "summary"):
        mine = [r for r in records if r["bundle"] == summary["bundle"] and r["time_utc"] == summary["time_utc"]]
        peak, cache = summary["isa_peak"], summary["in_cache"]
        ratio = summary["total_over_gemm_only"]
        lines += [
            f"### {_label(summary)} (`{summary['bundle']}`)",
            "",
            (f"{summary['cpu']} ({summary['machine']}), {summary['threads']} threads, TVM {summary['tvm']}, "
             f"{summary['time_utc']}. Total {summary['total_ms']:.2f} ms: the 10th percentile of {summary['n_plain']} "
             f"plain runs (median {summary['total_median_ms']:.2f}, p90 {summary['total_p90_ms']:.2f} ms); "
             f"kernels: {summary['kernels_ms']:.2f} ms, medians over {summary['rounds']} instrumented runs (their "
             f"sum per run: 10th percentile {summary['kernels_round_p10_ms']:.2f} ms) "
             f"({summary['kernel_calls']} kernel calls, "
             f"{sum(summary['vm_calls'].values())} VM builtin calls: "
             + ", ".join(f"{n.removeprefix(VM_PREFIX)} {c}" for n, c in sorted(summary["vm_calls"].items()))
             + f"). GEMM-only time (token-wise GEMMs) {summary['gemm_only_ms']:.2f} ms: the total is "
             f"{_num(ratio, '.2f')}x of it; with the attention matmuls {summary['gemm_and_attention_ms']:.2f} ms, "
             f"{_num(summary['total_over_gemm_and_attention'], '.2f')}x."),
            "",
            "| group | calls | ms | share | p10-p90 ms | GMAC | GMAC/s | of in-cache | of ISA peak |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in mine if r["kind"] == "group"):
            rate = r["gmacs_per_s"]
            spread = "-" if r["p10_ms"] is None else f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f}"
            lines.append(
                f"| {r['group']} | {r['calls']} | {r['ms']:.3f} | {r['share'] * 100:.1f}% | {spread} | "
                f"{_num(r['macs'] / 1e9 if r['macs'] else None, '.3f')} | {_num(rate, '.0f')} | "
                f"{_num(rate / cache['gmacs_per_s'] * 100 if rate and cache else None, '.0f')}"
                f"{'%' if rate and cache else ''} | "
                f"{_num(rate / peak['gmacs_per_s'] * 100 if rate and peak else None, '.0f')}"
                f"{'%' if rate and peak else ''} |")
        lines += ["", "Slowest kernels (all calls of one name together):", ""]
        lines += [f"- {r['ms']:.3f} ms, {r['calls']} x `{r['name']}` ({r['group']})"
                  for r in [r for r in mine if r["kind"] == "kernel"][:10]]
        refs = []
        if cache:
            refs.append(f"in-cache: the best of the bundle's int8 GEMMs, each replayed alone on its own inputs "
                        f"(`{cache['kernel']}`, {cache['ms'] * 1e3:.1f} us = {cache['gmacs_per_s']:.0f} GMAC/s)")
        if peak:
            refs.append(f"ISA peak: {peak['macs_per_cycle_per_core']} MACs/cycle/core ({peak['flag']}: "
                        f"{peak['assumption']}) x {peak['cpu_mhz']:.0f} MHz (/proc/cpuinfo) x {peak['threads']} "
                        f"threads = {peak['gmacs_per_s']:.0f} GMAC/s (the clock a VM reports is nominal: a rate above "
                        "this peak means the cores run faster)")
        lines += ["", "References: " + "; ".join(refs) + ".", ""]
    lines += ["Method: " + " ".join(__doc__.split("\n\n")[1].split()),
              "The machine is shared (other engineers compile on it): the p10-p90 columns are the spread over "
              "rounds, and runs minutes apart differ by more than that. The kernels' medians hold up under that load; "
              "the total does less, and what preemption its 10th percentile still carries lands in the VM and "
              "allocation overhead row. Where the kernels' sum per instrumented run (10th percentile) is near the "
              "total, the gap is noise that long kernels catch, not VM work; on a quiet machine the overhead measured "
              "0.1-0.4 ms for these models.", ""]
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    """One horizontal bar per bundle, split into its groups (ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [r for r in records if r["kind"] == "summary"]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.8 * len(summaries)))
    colors = dict(zip(GROUPS, plt.get_cmap("tab20").colors))
    for y, summary in enumerate(summaries):
        left = 0.0
        for r in records:
            if r["kind"] == "group" and r["bundle"] == summary["bundle"] and r["time_utc"] == summary["time_utc"]:
                width = max(r["ms"], 0.0)
                ax.barh(y, width, left=left, color=colors[r["group"]], label=r["group"] if y == 0 else None)
                left += width
    for group in GROUPS:  # groups absent from the first bundle still get a key
        if group not in ax.get_legend_handles_labels()[1] and any(r.get("group") == group for r in records):
            ax.barh(0, 0, color=colors[group], label=group)
    ax.set_yticks(range(len(summaries)), [f"{_label(s)}\n{s['bundle']}" for s in summaries], fontsize=7)
    ax.invert_yaxis()  # the first bundle on top, as in the table
    ax.set_xlabel("ms per inference, batch 1 (kernels: medians; the overhead fills up to the total)")
    ax.set_title(f"{summaries[0]['cpu']}, {summaries[0]['threads']} threads" if summaries else "", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
