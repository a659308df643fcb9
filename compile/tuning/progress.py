"""What a tuning run shows: a progress bar over the trials, then hand vs tuned per kernel."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tqdm import tqdm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.target import Target

from compile.tuning.database import fastest_s, records_for
from compile.tuning.hand import is_hand_trace


@derived_object
class TuningProgress(PyMeasureCallback):
    """A tqdm bar (stderr) over the trials sent to measurement, and the best time of the kernel measured last.

    MetaSchedule joins measurements lazily (the first round visits every kernel before any result
    is read), so the bar advances as batches are sent (`sent`) and the times follow as they come.
    """

    def __init__(self, trials: int, task_names: list[str]):
        self.names = task_names
        self.bar = tqdm(total=trials, unit="trial", desc="tuning", file=sys.stderr, dynamic_ncols=True)
        self.best_ms: dict[int, float] = {}

    def sent(self, task_name: str, size: int) -> None:
        self.bar.update(size)
        self.bar.set_description(f"tuning {task_name[:32]}")

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        for result in runner_results:
            if result.error_msg is None and result.run_secs:
                run_ms = 1e3 * min(float(s) for s in result.run_secs)
                self.best_ms[task_id] = min(self.best_ms.get(task_id, run_ms), run_ms)
        if task_id in self.best_ms:
            self.bar.set_postfix_str(f"{self.names[task_id][:32]}: {self.best_ms[task_id]:.3f} ms")

    def close(self) -> None:
        self.bar.close()


@dataclass(frozen=True)
class KernelComparison:
    """One tuned function: its calls per inference and the best hand / tuned time on the target."""

    name: str
    calls: int
    hand_ms: float | None  # None: not measured (no hand rule applies, or the run stopped before it)
    tuned_ms: float | None

    @property
    def uses_tuned(self) -> bool:
        """What a build does: the tuned record where it is the fastest (see ApplyTuningDatabase)."""
        return self.tuned_ms is not None and (self.hand_ms is None or self.tuned_ms < self.hand_ms)


def compare_kernels(database: ms.database.Database, tasks: list[ms.ExtractedTask], target: Target) -> list[KernelComparison]:
    """Best hand and best tuned record of each task in the database, measured on `target`."""
    rows = []
    for task in tasks:
        records = records_for(database, task.dispatched[0], target)
        hand = [r for r in records if is_hand_trace(r.trace)]
        tuned = [r for r in records if not is_hand_trace(r.trace)]
        rows.append(KernelComparison(task.task_name, task.weight, 1e3 * fastest_s(hand[0]) if hand else None,
                                     1e3 * fastest_s(tuned[0]) if tuned else None))
    return rows


def summary_lines(rows: list[KernelComparison]) -> list[str]:
    """Per kernel hand vs tuned, and the summed kernel time per inference with the database applied."""
    lines = []
    for row in sorted(rows, key=lambda r: -(r.hand_ms or r.tuned_ms or 0.0) * r.calls):
        hand = f"{row.hand_ms:.4f}" if row.hand_ms is not None else "-"
        tuned = f"{row.tuned_ms:.4f}" if row.tuned_ms is not None else "-"
        lines.append(f"  {row.name[:60]:<60} x{row.calls:<3} hand {hand:>8} ms  tuned {tuned:>8} ms  "
                     f"-> {'tuned' if row.uses_tuned else 'hand'}")
    compared = [r for r in rows if r.hand_ms is not None]
    hand_total = sum(r.hand_ms * r.calls for r in compared)
    best_total = sum(min(r.hand_ms, r.tuned_ms or r.hand_ms) * r.calls for r in compared)
    lines.append(f"kernels with a hand measurement: {len(compared)} of {len(rows)}; summed time per inference "
                 f"{hand_total:.2f} ms hand -> {best_total:.2f} ms with the database "
                 f"(tuned schedule used for {sum(r.uses_tuned for r in rows)} kernels)")
    return lines
