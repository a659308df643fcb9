"""Where tuning candidates are built and timed: this machine, or a board behind an RPC tracker.

Candidates are built by worker processes with `build_candidate`, which skips TVM's
default `import tvm.s_tir.tensor_intrin` (45-100 s per worker, longer than the build timeout).
For a board they are cross compiled into shared libraries, so the board needs no compiler.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time

from tvm.s_tir import meta_schedule as ms

from compile.tuning.settings import TuneSettings
from runtime.errors import EdgevitError
from runtime.tracker import Tracker
from targets import TargetPreset
from targets.cpu_features import cpu_features, machine_arch

BUILD_TIMEOUT_S = 120
RUN_TIMEOUT_S = 60
RPC_SESSION_TIMEOUT_S = 300
# 5 repeats of at least 20 ms of back-to-back calls each; builds rank records by the fastest repeat
EVALUATOR = ms.runner.EvaluatorConfig(number=1, repeat=5, min_repeat_ms=20, enable_cpu_cache_flush=False)


def build_candidate(mod, target, _params):
    """Compile one candidate schedule (no tensor-intrinsic registration: see the module docstring)."""
    import tvm

    return tvm.compile(mod, target=target)


def export_candidate(module, cross_compiler: str | None) -> str:
    """Write a built candidate as a shared library (cross compiled when a compiler is named); its path."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="edgevit-candidate-"), "candidate.so")
    module.export_library(path, fcompile=cc.cross_compiler(cross_compiler) if cross_compiler else None)
    return path


def candidate_builder(preset: TargetPreset) -> ms.builder.LocalBuilder:
    """Candidate builds in parallel worker processes on this machine, one per core."""
    return ms.builder.LocalBuilder(f_build=build_candidate,
                                   f_export=functools.partial(export_candidate, cross_compiler=preset.cross_compiler),
                                   timeout_sec=BUILD_TIMEOUT_S, max_workers=len(os.sched_getaffinity(0)))


def candidate_runner(preset: TargetPreset, settings: TuneSettings) -> ms.runner.Runner:
    """Times candidates one at a time: locally when this machine can run the preset's code, else on a board."""
    if settings.rpc_key is not None:
        tracker = settings.tracker
        wait_for_key(tracker, settings.rpc_key, timeout_s=60)
        config = ms.runner.RPCConfig(tracker_host=tracker.host, tracker_port=tracker.port,
                                     tracker_key=settings.rpc_key, session_timeout_sec=RPC_SESSION_TIMEOUT_S)
        return ms.runner.RPCRunner(config, EVALUATOR, max_workers=1)
    missing = sorted(set(preset.required_cpu_features) - cpu_features())
    if preset.cross_compiler is not None or preset.arch != machine_arch() or missing:
        raise EdgevitError(f"kernels for {preset.name} cannot run on this machine ({', '.join(missing) or preset.arch}); "
                           "measure them on the board: --tune-rpc KEY --tracker HOST:PORT")
    return ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=EVALUATOR)


def close_runner(runner: ms.runner.Runner) -> None:
    """Stop a runner's worker process: LocalRunner and RPCRunner keep a PopenPoolExecutor open until
    garbage collection, so a finished tuning run would otherwise leave a tvm popen_worker running."""
    pool = getattr(runner, "pool", None)
    if pool is not None:
        pool.shutdown()


def wait_for_key(tracker: Tracker, key: str, timeout_s: float = 120.0) -> None:
    """Block until a server with `key` has registered at the tracker."""
    from tvm import rpc

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            summary = rpc.connect_tracker(tracker.host, tracker.port).summary()
            if summary["queue_info"].get(key, {}).get("free", 0) > 0:
                return
        except (RuntimeError, OSError, ConnectionError):
            pass
        time.sleep(0.5)
    raise EdgevitError(f"no RPC server with key '{key}' registered at {tracker.host}:{tracker.port} within {timeout_s:.0f} s")
