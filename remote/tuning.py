"""MetaSchedule tuning of a TIR module whose candidates are measured on a board through the RPC tracker.

Candidates are built on the host and cross compiled into shared libraries (a board has no compiler)
by compile.tuning's builder; `python -m compile --tune N --tune-rpc KEY` tunes a whole model this way.
"""

from __future__ import annotations

import functools
from pathlib import Path

from compile.tuning.tracker import Tracker


def tune_on_board(mod, target, tracker: Tracker, key: str, work_dir: Path, trials: int):
    """Tune `mod` (TIR) for an aarch64 `target`, measuring on the board behind `key`; returns the JSON database."""
    from tvm.s_tir import meta_schedule as ms

    from compile.tuning.measure import build_candidate, close_runner, export_candidate

    export = functools.partial(export_candidate, cross_compiler="aarch64-linux-gnu-g++")
    builder = ms.builder.LocalBuilder(f_build=build_candidate, f_export=export, timeout_sec=120, max_workers=1)
    runner = ms.runner.RPCRunner(
        ms.runner.RPCConfig(tracker_host=tracker.host, tracker_port=tracker.port, tracker_key=key,
                            session_timeout_sec=300),
        ms.runner.EvaluatorConfig(number=1, repeat=2, min_repeat_ms=0),
        max_workers=1,
    )
    try:
        return ms.tune_tir(mod, target, str(work_dir), max_trials_global=trials, num_trials_per_iter=min(trials, 4),
                           builder=builder, runner=runner, num_tuning_cores=1)
    finally:
        close_runner(runner)
