"""A preset's tuning database: where it lives and which of its records fit a target.

MetaSchedule's JSON database (database_workload.json + database_tuning_record.json) in
targets/tuning/<preset>/, appended to record by record while tuning, so an interrupted run loses
nothing. TVM's own lookups ignore the target a record was measured on; here a record counts only
for the exact same target (the host preset's records carry the detected CPU and core count, so a
machine with another CPU falls back to the hand schedules).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import tvm_ffi
from tvm import IRModule, tirx
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from runtime.errors import EdgevitError
from targets import TargetPreset

DATABASE_ROOT = Path(__file__).resolve().parents[2] / "targets" / "tuning"
FILES = ("database_workload.json", "database_tuning_record.json")


def database_dir(preset: TargetPreset) -> Path:
    """targets/tuning/<preset>: the database shipped in the repository for a preset."""
    return DATABASE_ROOT / preset.name


def open_database(directory: Path) -> ms.database.JSONDatabase:
    """The JSON database in `directory`, created empty when missing."""
    directory.mkdir(parents=True, exist_ok=True)
    _register_cpu_tensor_intrinsics()
    try:
        return ms.database.JSONDatabase(work_dir=str(directory), module_equality="structural")
    except (ValueError, RuntimeError) as err:
        raise EdgevitError(f"tuning database {directory} is unreadable ({str(err).splitlines()[0][:200]}); "
                           "remove it or regenerate it with --tune") from None


def existing_database(directory: Path) -> ms.database.JSONDatabase | None:
    """The database in `directory` if one was written there, else None (nothing is created)."""
    return open_database(directory) if all((directory / name).is_file() for name in FILES) else None


def workload_of(func: tirx.PrimFunc) -> IRModule:
    """The module a database keys `func` by: MetaSchedule's normalization ({"main": func}, noalias)."""
    return tvm_ffi.get_global_func("tvm.s_tir.meta_schedule.normalize_mod")(func)


def same_target(record: ms.database.TuningRecord, target: Target) -> bool:
    return record.target is not None and record.target.export() == target.export()


def records_for(database: ms.database.Database, workload: IRModule, target: Target) -> list:
    """The successfully measured records of `workload` on `target`, fastest first.

    Ranked by a record's fastest repeat, not MetaSchedule's mean: on a busy machine the mean carries
    other processes' load, the minimum much less.
    """
    if not database.has_workload(workload):
        return []
    records = database.get_top_k(database.commit_workload(workload), len(database))
    return sorted((record for record in records if same_target(record, target)), key=fastest_s)


def fastest_s(record: ms.database.TuningRecord) -> float:
    """A record's fastest repeat in seconds."""
    return min(float(s) for s in record.run_secs)


def measured_on(database: ms.database.Database, workload: IRModule, target: Target) -> list:
    """Every record of `workload` measured on `target`, failed ones included."""
    if not database.has_workload(workload):
        return []
    entry = database.commit_workload(workload)
    return [record for record in database.get_all_tuning_records()
            if record.workload.same_as(entry) and same_target(record, target)]


def _register_cpu_tensor_intrinsics() -> None:
    """Register TVM's x86 / ARM tensor intrinsics, without its GPU ones.

    Records of MetaSchedule's CPU search spaces may tensorize with them, and loading a database
    replays every record. ms.TuneContext imports all of tvm.s_tir.tensor_intrin, whose __init__
    also builds every CUDA / ROCm / Hexagon intrinsic (30-100 s): the package is entered in
    sys.modules without running its __init__ (its submodules still import normally), so that
    import finds it done.
    """
    import tvm.s_tir

    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        package = importlib.util.module_from_spec(importlib.util.find_spec(name))
        sys.modules[name] = package
        tvm.s_tir.tensor_intrin = package
    for cpu in ("x86", "arm_cpu"):
        importlib.import_module(f"{name}.{cpu}")
