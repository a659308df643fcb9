"""MetaSchedule tuning (compile.tuning) on a one-kernel Relax module: the database it writes, resuming
from it, and how a build applies it (target check, hand-vs-tuned policy, numerics). Real TVM, tiny
trial counts."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.s_tir.meta_schedule.database import TuningRecord

from compile.lowering.cpu import fuse_for_cpu
from compile.schedule import hand_schedule
from compile.tuning.database import FILES, existing_database, open_database, records_for, workload_of
from compile.tuning.hand import is_hand_trace
from compile.tuning.settings import TuneSettings
from compile.tuning.tune import tune_model
from runtime.errors import EdgevitError
from targets import load_preset
from tests.helpers import lower_for_cpu, run_module
from tests.processes import leftover_processes, running_descendants

TRIALS = 4
M, K, N = 64, 96, 48


def fused_dense_relu(preset) -> tvm.IRModule:
    """dense_relu's module fused for the preset's target, as the build tunes it."""
    return fuse_for_cpu(dense_relu()[0], preset.target())


def dense_relu() -> tuple[tvm.IRModule, np.ndarray, np.ndarray]:
    """main(x [M, K]) = relu(x @ W + b): a single fused kernel after lowering. Returns (module, W, b)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((K, N)).astype("float32")
    bias = rng.standard_normal((N,)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((M, K), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.matmul(x, relax.const(weight)), relax.const(bias)))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get(), weight, bias


@pytest.fixture(scope="module")
def host():
    return load_preset("host")


@pytest.fixture(scope="module")
def kernel(host):
    """(global var name, unscheduled PrimFunc) of the module's one kernel."""
    fused = fuse_for_cpu(dense_relu()[0], host.target())
    (name, func), = [(gv.name_hint, f) for gv, f in fused.functions.items() if isinstance(f, tirx.PrimFunc)]
    return name, func


@pytest.fixture(scope="module")
def tuned_dir(host, tmp_path_factory):
    """A database after one run of TRIALS trials (a worker tune_model leaves behind is stopped here; the
    test below reports it)."""
    directory = tmp_path_factory.mktemp("tuning") / "host"
    before = frozenset(proc.pid for proc in running_descendants())
    try:
        tune_model(fused_dense_relu(host), host, TuneSettings(trials=TRIALS, database_dir=directory), log=lambda _: None)
        yield directory
    finally:
        leftover_processes(grace_s=0, ignore=before)


def test_tuning_leaves_no_worker_process_running(host, tmp_path):
    """MetaSchedule's builder and runner work in PopenPool worker processes: none outlives tune_model."""
    before = frozenset(proc.pid for proc in running_descendants())
    tune_model(fused_dense_relu(host), host, TuneSettings(trials=TRIALS, database_dir=tmp_path), log=lambda _: None)
    left = leftover_processes(grace_s=1.0, ignore=before)
    assert not left, f"tune_model left worker processes running: {left}"


def _copy(directory, tmp_path):
    copy = tmp_path / "db"
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns("logs"))
    return copy


def _same_code(a: tirx.PrimFunc, b: tirx.PrimFunc) -> bool:
    """Equal loop nests: attributes (names, markers) aside."""
    return tvm_ffi.structural_equal(a.body, b.body, map_free_vars=True)


def test_tuning_writes_a_database_with_the_hand_schedule_measured(tuned_dir, host, kernel):
    assert all((tuned_dir / name).is_file() for name in FILES)
    records = records_for(existing_database(tuned_dir), workload_of(kernel[1]), host.target())
    assert len(records) >= TRIALS
    assert sum(is_hand_trace(r.trace) for r in records) == 1, "the hand schedule is measured exactly once"
    assert all(r.run_secs and float(r.run_secs[0]) > 0 for r in records)


def test_rerun_resumes_and_never_measures_a_schedule_twice(tuned_dir, host, kernel, tmp_path):
    directory = _copy(tuned_dir, tmp_path)
    workload = workload_of(kernel[1])
    before = len(records_for(existing_database(directory), workload, host.target()))
    tune_model(fused_dense_relu(host), host, TuneSettings(trials=TRIALS, database_dir=directory), log=lambda _: None)
    database = existing_database(directory)
    records = [r for r in database.get_all_tuning_records() if r.workload.same_as(database.commit_workload(workload))]
    assert len(records) >= before + TRIALS, "the second run adds its trials to the first run's"
    hashes = [tvm_ffi.structural_hash(r.as_measure_candidate().sch.mod) for r in records]
    assert len(set(hashes)) == len(hashes), "a stored schedule was measured again"
    assert sum(is_hand_trace(r.trace) for r in records) == 1


def _commit_fastest(source, directory, kernel, hand: bool, measured_on: tvm.target.Target,
                    target: tvm.target.Target) -> TuningRecord:
    """Copy a stored record (the hand one or a tuned one) from `source` into the database in `directory`
    as measured on `target` and faster than anything else; returns the source record."""
    workload = workload_of(kernel[1])
    record = next(r for r in records_for(source, workload, measured_on) if is_hand_trace(r.trace) == hand)
    database = open_database(directory)
    database.commit_tuning_record(TuningRecord(record.trace, database.commit_workload(workload), [1e-9], target,
                                               record.args_info))
    return record


def test_build_replays_a_tuned_record_that_beats_the_hand_schedule(tuned_dir, host, kernel, tmp_path):
    directory = _copy(tuned_dir, tmp_path)
    record = _commit_fastest(existing_database(tuned_dir), directory, kernel, False, host.target(), host.target())
    lowered = lower_for_cpu(dense_relu()[0], host.target(), existing_database(directory))
    assert _same_code(lowered[kernel[0]], record.as_measure_candidate().sch.mod["main"]), \
        "the kernel was not scheduled from the database"
    assert not _same_code(lowered[kernel[0]], hand_schedule(kernel[1], host.target()).mod["main"])
    assert lowered[kernel[0]].attrs["tirx.is_scheduled"]


def test_hand_rules_schedule_a_kernel_whose_fastest_record_is_the_hand_one(tuned_dir, host, kernel, tmp_path):
    directory = _copy(tuned_dir, tmp_path)
    _commit_fastest(existing_database(tuned_dir), directory, kernel, True, host.target(), host.target())
    lowered = lower_for_cpu(dense_relu()[0], host.target(), existing_database(directory))
    assert _same_code(lowered[kernel[0]], hand_schedule(kernel[1], host.target()).mod["main"])


def test_records_of_another_target_are_ignored(tuned_dir, host, kernel, tmp_path):
    other_cpu = "skylake" if host.tvm_target["mcpu"] == "cascadelake" else "cascadelake"
    other = tvm.target.Target({**host.tvm_target, "mcpu": other_cpu})
    directory = tmp_path / "other"
    _commit_fastest(existing_database(tuned_dir), directory, kernel, False, host.target(), other)
    assert records_for(existing_database(directory), workload_of(kernel[1]), other), "the record is stored"
    lowered = lower_for_cpu(dense_relu()[0], host.target(), existing_database(directory))
    assert _same_code(lowered[kernel[0]], hand_schedule(kernel[1], host.target()).mod["main"])


def test_a_build_with_tuned_records_computes_the_right_result(tuned_dir, host, kernel, tmp_path):
    directory = tmp_path / "tuned"
    _commit_fastest(existing_database(tuned_dir), directory, kernel, False, host.target(), host.target())
    mod, weight, bias = dense_relu()
    executable = relax.build(lower_for_cpu(mod, host.target(), existing_database(directory)), target=host.target())
    vm = relax.VirtualMachine(executable, tvm.cpu())
    x = np.random.default_rng(1).standard_normal((M, K)).astype("float32")
    out = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(out, np.maximum(x @ weight + bias, 0), rtol=1e-4, atol=1e-4)


def test_kernels_whose_hand_schedule_tensorizes_are_not_tuned():
    from compile.kernels import emit_int8_dense
    from compile.tuning.tune import tunable_tasks

    target = load_preset("x86-avx512").target()  # AVX-512 VNNI: the int8 GEMM rule tensorizes
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((M, K), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = emit_int8_dense(bb, x, np.ones((K, N), "int8"), target)
            out = bb.emit_output(relax.op.astype(y, "float32"))
        bb.emit_func_output(out)
    assert tunable_tasks(fuse_for_cpu(bb.get(), target), target) == []
    assert tunable_tasks(fuse_for_cpu(dense_relu()[0], target), target), "the FP32 kernel is tunable"


def test_tuning_settings_and_targets_that_cannot_be_measured_fail_with_one_line():
    from compile.tuning.measure import candidate_runner

    with pytest.raises(EdgevitError, match="--tune"):
        TuneSettings(trials=-1)
    with pytest.raises(EdgevitError, match="--tune-rpc"):
        candidate_runner(load_preset("rpi5"), TuneSettings(trials=TRIALS))
    with pytest.raises(EdgevitError, match="CPU targets"):
        tune_model(dense_relu()[0], load_preset("jetson"), TuneSettings(trials=TRIALS))


def test_cli_tuning_for_a_board_without_its_rpc_key_fails_with_one_line(tmp_path):
    result = run_module("compile", "--target", "rpi5", "--random-init", "--tune", "4", "--tuning-db", tmp_path,
                        "--out", tmp_path / "bundle")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: kernels for rpi5 cannot run on this machine")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_trials_measured_on_a_board_through_the_rpc_tracker(host, kernel, tmp_path):
    """--tune-rpc against an RPC server on this machine: candidates built here, timed by the server."""
    import sys

    from remote.rpc import start_server_argv, start_tracker
    from runtime.tracker import Tracker
    from tests.farm_fixtures import free_port
    from tests.processes import running, start_group

    tracker = Tracker("127.0.0.1", free_port())
    server_argv = start_server_argv([sys.executable], tracker, "tuning-board")
    with running(start_tracker(tracker)), running(start_group(server_argv, stdout=subprocess.DEVNULL,
                                                               stderr=subprocess.DEVNULL)):
        settings = TuneSettings(trials=TRIALS, rpc_key="tuning-board", tracker=tracker, database_dir=tmp_path)
        tune_model(fused_dense_relu(host), host, settings, log=lambda _: None)
    assert len(records_for(existing_database(tmp_path), workload_of(kernel[1]), host.target())) >= TRIALS
