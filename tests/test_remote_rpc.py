"""TVM RPC against an emulated board: a real tracker, an RPC server running under qemu, a bundle timed
on the board, and MetaSchedule candidates measured there."""

from __future__ import annotations

import subprocess

import pytest

from compile.tuning.measure import wait_for_key
from remote.rpc import rpc_bench, start_server_argv, start_tracker
from runtime.tracker import Tracker
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
    """compile's --tune-rpc path (tune_model with an RPC key) for rpi5: candidates cross compiled here, timed on the
    emulated board through the tracker."""
    from compile.lowering.cpu import fuse_for_cpu
    from compile.tuning.database import existing_database
    from compile.tuning.settings import TuneSettings
    from compile.tuning.tune import tune_model
    from targets import load_preset
    from tests.test_tuning import dense_relu

    rpi5 = load_preset("rpi5")
    settings = TuneSettings(trials=4, rpc_key=KEY, tracker=rpc_board, database_dir=tmp_path)
    tune_model(fuse_for_cpu(dense_relu()[0], rpi5.target()), rpi5, settings, log=lambda _: None)
    records = existing_database(tmp_path).get_all_tuning_records()
    measured = [r for r in records if r.run_secs and all(float(t) < 1e9 for t in r.run_secs)]
    assert measured, "no trial was measured on the board"
