"""TVM RPC against an emulated board: a real tracker, an RPC server running under qemu, a bundle timed
on the board, and MetaSchedule candidates measured there."""

from __future__ import annotations

import subprocess

import pytest

from compile.tuning.tracker import Tracker, wait_for_key
from remote.rpc import rpc_bench, start_server_argv, start_tracker
from tests.farm_fixtures import free_port
from tests.processes import running, start_group

KEY = "rpi5-emulated"


@pytest.fixture(scope="module")
def rpc_board():
    from tests.emulated_board import emulated_board

    board = emulated_board("cortex-a76")
    tracker = Tracker("127.0.0.1", free_port())
    server_argv = start_server_argv(board.python_argv([]), tracker, KEY)
    with running(start_tracker(tracker)), running(start_group(server_argv, env=board.environment(),
                                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)):
        wait_for_key(tracker, KEY, timeout_s=180)
        yield tracker


@pytest.mark.slow
def test_bundle_timed_on_the_board_over_rpc(rpc_board, rpi5_bundle):
    record = rpc_bench(rpc_board, KEY, rpi5_bundle, number=1, repeat=2)
    assert record["n"] == 2 and record["median_ms"] > 0 and record["via"] == "rpc"


@pytest.mark.slow
def test_metaschedule_trials_measured_on_the_board(rpc_board, tmp_path):
    import tvm
    from tvm import te

    from remote.tuning import tune_on_board
    from targets import load_preset

    a = te.placeholder((64, 64), name="A")
    b = te.placeholder((64, 64), name="B")
    k = te.reduce_axis((0, 64), name="k")
    c = te.compute((64, 64), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b, c])})
    database = tune_on_board(mod, load_preset("rpi5").target(), rpc_board, KEY, tmp_path, trials=4)
    records = database.get_all_tuning_records()
    assert records, "no trial was recorded"
    measured = [r for r in records if r.run_secs and all(float(t) < 1e9 for t in r.run_secs)]
    assert measured, "no trial was measured on the board"
    assert (tmp_path / "database_tuning_record.json").is_file()
