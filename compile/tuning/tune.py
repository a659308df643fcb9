"""tune_model: N more MetaSchedule trials for the kernels of one model on one target preset."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from tvm import IRModule
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from compile.schedule import hand_schedule
from compile.tuning.database import database_dir, open_database
from compile.tuning.hand import uses_tensor_intrinsics
from compile.tuning.measure import candidate_builder, candidate_runner, close_runner
from compile.tuning.progress import TuningProgress, compare_kernels, summary_lines
from compile.tuning.search import ResumingSearch
from compile.tuning.settings import TuneSettings
from runtime.errors import EdgevitError
from targets import TargetPreset


def tunable_tasks(fused: IRModule, target: Target) -> list[ms.ExtractedTask]:
    """The fused functions of `fused` that run and are worth tuning.

    Left out: pure reshapes, which relax.build turns into views (RewriteDataflowReshape) so their
    kernels never run, and functions whose hand schedule tensorizes (see compile.tuning.hand).
    """
    from tvm import relax

    tasks = ms.relax_integration.extract_tasks(relax.transform.RewriteDataflowReshape()(fused), target)
    return [task for task in tasks if not _tensorized(task.dispatched[0], target)]


def _tensorized(workload: IRModule, target: Target) -> bool:
    sch = hand_schedule(workload["main"], target)
    return sch is not None and uses_tensor_intrinsics(sch)


def trials_per_iteration(trials: int, num_tasks: int) -> int:
    """Candidates per search round (MetaSchedule's default is 64): the first round visits every
    kernel, and each round costs a population search and a pool of build workers, so rounds are
    as large as the budget allows, between 4 and 16."""
    return max(4, min(16, trials // max(1, num_tasks)))


def refuse_untunable(preset: TargetPreset) -> None:
    """--tune measures CPU kernels only."""
    if preset.device != "cpu":
        raise EdgevitError(f"--tune supports CPU targets; {preset.name} is a {preset.device} target")


def tune_model(fused: IRModule, preset: TargetPreset, settings: TuneSettings,
               log: Callable[[str], None] = print) -> Path:
    """Run about `settings.trials` more trials over the kernels of `fused`, adding them to the preset's database.

    `fused` is the module as the CPU build schedules it (compile.lowering.cpu.fuse_for_cpu), so the records
    key exactly what the build looks up. Every measurement is appended to the
    database as it completes: an interrupted run keeps what it measured and the next one continues
    from there (compile.tuning.search). The caller has checked the preset's toolchain (compile.build).
    Returns the database directory.
    """
    directory = settings.database_dir or database_dir(preset)
    if settings.trials == 0:
        return directory
    refuse_untunable(preset)
    runner = candidate_runner(preset, settings)  # first: a preset this machine cannot time fails here, early
    try:
        _run_trials(fused, preset, settings, directory, runner, log)
    finally:
        close_runner(runner)
    return directory


def _run_trials(fused: IRModule, preset: TargetPreset, settings: TuneSettings, directory: Path,
                runner: ms.runner.Runner, log: Callable[[str], None]) -> None:
    target = preset.target()
    tasks = tunable_tasks(fused, target)
    if not tasks:
        log("tuning: no kernel to tune (all hand-scheduled with tensor intrinsics)")
        return
    database = open_database(directory)
    per_iteration = trials_per_iteration(settings.trials, len(tasks))
    log_path = directory / "logs" / "tuning.log"
    log(f"tuning {len(tasks)} kernels for {preset.name}: {settings.trials} trials ({per_iteration} per round), "
        f"measured {'on board ' + settings.rpc_key if settings.rpc_key else 'here'}; database {directory}, "
        f"MetaSchedule log {log_path}")
    progress = TuningProgress(settings.trials, [task.task_name for task in tasks])
    with _log_to_file(log_path) as logger:
        contexts = [
            ms.TuneContext(mod=task.dispatched[0], target=target, space_generator="post-order-apply",
                           search_strategy=ResumingSearch(progress.sent), task_name=task.task_name, logger=logger,
                           num_threads="physical")
            for task in tasks
        ]
        try:
            ms.tune.tune_tasks(
                tasks=contexts, task_weights=[float(task.weight) for task in tasks], work_dir=str(directory),
                max_trials_global=settings.trials, num_trials_per_iter=per_iteration,
                builder=candidate_builder(preset), runner=runner, database=database,
                measure_callbacks=ms.MeasureCallback.create("default") + [progress],
            )
        finally:
            progress.close()
    for line in summary_lines(compare_kernels(database, tasks, target)):
        log(line)


@contextmanager
def _log_to_file(path: Path):
    """MetaSchedule's own log (task tables, every trial) goes to `path`, not to the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("tvm.s_tir.meta_schedule")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    saved = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        yield logging.getLogger("tvm.s_tir.meta_schedule.tasks")
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(saved[0])
        root.propagate = saved[1]

