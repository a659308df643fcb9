"""MetaSchedule tuning whose candidates are measured on a board through the RPC tracker.

Candidates are built on the host and cross compiled into shared libraries (a board has no
compiler); the builder skips TVM's default `import tvm.s_tir.tensor_intrin`, which takes longer
than the builder's timeout in worker processes (see shared notes).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from remote.rpc import Tracker


def build_candidate(mod, target, _params):
    """Compile one candidate schedule (no tensor-intrinsic registration)."""
    import tvm

    return tvm.compile(mod, target=target)


def export_aarch64(module) -> str:
    """Cross compile a candidate for an aarch64 board; returns the library path."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="edgevit-cand-"), "candidate.so")
    module.export_library(path, fcompile=cc.cross_compiler("aarch64-linux-gnu-g++"))
    return path


def tune_on_board(mod, target, tracker: Tracker, key: str, work_dir: Path, trials: int):
    """Tune `mod` (TIR) for `target`, measuring on the board behind `key`; returns the JSON database."""
    from tvm.s_tir import meta_schedule as ms

    builder = ms.builder.LocalBuilder(f_build=build_candidate, f_export=export_aarch64, timeout_sec=120, max_workers=1)
    runner = ms.runner.RPCRunner(
        ms.runner.RPCConfig(tracker_host=tracker.host, tracker_port=tracker.port, tracker_key=key,
                            session_timeout_sec=300),
        ms.runner.EvaluatorConfig(number=1, repeat=2, min_repeat_ms=0),
        max_workers=1,
    )
    return ms.tune_tir(mod, target, str(work_dir), max_trials_global=trials, num_trials_per_iter=min(trials, 4),
                       builder=builder, runner=runner, num_tuning_cores=1)
