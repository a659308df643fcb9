"""ResumingSearch: MetaSchedule's evolutionary search, continued from a stored database."""

from __future__ import annotations

from collections.abc import Callable

import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.runner import RunnerResult
from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate, PySearchStrategy, SearchStrategy

from compile.tuning.database import measured_on
from compile.tuning.hand import hand_candidate


@derived_object
class ResumingSearch(PySearchStrategy):
    """Evolutionary search that picks up where the database left off, and measures the hand schedule.

    The stock search seeds its population from the database's best records but may measure stored
    schedules again, and its cost model starts untrained. Here the cost model first learns from the
    records already measured on this target, candidates the database holds are dropped before
    building, and the first batch carries the task's hand schedule when it was never measured.
    `on_batch(task_name, size)` hears of every batch sent to measurement.
    """

    def __init__(self, on_batch: Callable[[str, int], None], inner: SearchStrategy | None = None):
        self.on_batch = on_batch
        self.inner = inner if inner is not None else SearchStrategy.create("evolutionary")
        self.context = None
        self.known: set[int] = set()
        self.pending: list[MeasureCandidate] = []

    def _initialize_with_tune_context(self, context) -> None:
        self.context = context
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None) -> None:
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)
        workload, target = self.context.mod, self.context.target
        stored = measured_on(database, workload, target)
        candidates = [record.as_measure_candidate() for record in stored]
        self.known = {tvm_ffi.structural_hash(candidate.sch.mod) for candidate in candidates}
        if candidates:
            cost_model.update(self.context, candidates, [RunnerResult(record.run_secs, None) for record in stored])
        hand = hand_candidate(workload, target)
        if hand is not None and tvm_ffi.structural_hash(hand.mod) not in self.known:
            self.pending = [MeasureCandidate(hand, ArgInfo.from_entry_func(hand.mod, remove_preproc=True))]

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self) -> list[MeasureCandidate] | None:
        candidates = self.inner.generate_measure_candidates()
        fresh = [c for c in candidates or [] if tvm_ffi.structural_hash(c.sch.mod) not in self.known]
        batch, self.pending = self.pending + fresh, []
        if candidates is None and not batch:
            return None
        # the inner search only remembers its own picks: it could pick the hand schedule again
        # once the database's best records (the hand one among them) seed its population
        self.known.update(tvm_ffi.structural_hash(candidate.sch.mod) for candidate in batch)
        self.on_batch(str(self.context.task_name), len(batch))
        return batch

    def notify_runner_results(self, measure_candidates, results) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self) -> SearchStrategy:
        return ResumingSearch(self.on_batch, self.inner.clone())
