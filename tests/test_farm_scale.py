"""`remote bench` on 32 real sshd boards with faults, stopped with SIGINT and SIGTERM, killed with SIGKILL, resumed:
every board measured exactly once across the runs, every line of the results parses, nothing left running or
half-written on the boards."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from remote.ssh import TMP_SUFFIX
from runtime.bundle import read_manifest, sha256_file
from tests.fault_farm import CHANGED, DROPPING, HEALTHY, REFUSING, SLOW, FaultFarm, bench_command, build_fault_farm
from tests.helpers import REPO

DEADLINE_S = 600  # a run that never gets there fails instead of hanging


def _lines(results: Path) -> list[str]:
    return results.read_text().splitlines(keepends=True) if results.exists() else []


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def _start(farm: FaultFarm, bundle: Path, results: Path, log: Path, *flags: str) -> subprocess.Popen:
    with open(log, "w") as err:
        return subprocess.Popen(bench_command(farm, bundle, results, "--parallel", "8", *flags), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)


def _run_until_records(farm: FaultFarm, bundle: Path, results: Path, log: Path, records: int, *flags: str):
    """Start a farm run and return it once `records` lines are in the file and every slow board is mid-bench."""
    run = _start(farm, bundle, results, log, *flags)

    def ready() -> bool:
        assert run.poll() is None, log.read_text()[-3000:]
        return len(_lines(results)) >= records and set(farm.names(SLOW)) <= set(farm.benches_running())

    _wait_until(ready, f"{records} records with the slow boards mid-bench")
    return run


@pytest.mark.slow
def test_32_boards_with_faults_stopped_killed_and_resumed(host_bundle, tmp_path):
    farm = build_fault_farm(tmp_path / "farm", host_bundle)
    results = tmp_path / "farm.jsonl"
    try:
        kept = 0
        for number, stop in enumerate((signal.SIGINT, signal.SIGTERM)):  # Ctrl-C, then a service manager's stop
            # the boards in flight stop cleanly and what finished stays
            log = tmp_path / f"run{number}.log"
            run = _run_until_records(farm, host_bundle, results, log, kept + 6, *(["--resume"] if kept else []))
            run.send_signal(stop)
            assert run.wait(timeout=120) == 130
            stderr = log.read_text()
            assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "error: interrupted", stderr[-3000:]
            assert f"stopped: {len(_lines(results)) - kept} finished board(s) kept in {results}" in stderr
            kept = len(_lines(results))
            assert farm.benches_running() == []  # ended on the boards before the farm exited

        # SIGKILL mid-run: the boards end the orphaned benches once the connection is gone
        killed = _run_until_records(farm, host_bundle, results, tmp_path / "killed.log", kept + 6, "--resume")
        killed.kill()
        killed.wait(timeout=60)
        _wait_until(lambda: farm.benches_running() == [], "the boards ending the benches of a killed farm")

        # resumed to the end, the slow boards let through
        farm.release.touch()
        last = _start(farm, host_bundle, results, tmp_path / "last.log", "--resume")
        assert last.wait(timeout=DEADLINE_S) == 1, (tmp_path / "last.log").read_text()[-3000:]  # the faulty boards
    finally:
        farm.stop()

    lines = _lines(results)
    assert lines and all(line.endswith("\n") for line in lines)
    records = [json.loads(line) for line in lines]
    measured = Counter(r["board"] for r in records if r["status"] == "ok")
    assert measured == Counter(farm.names(SLOW, DROPPING, HEALTHY))  # each exactly once across the three runs
    errors = {r["board"]: r["error"] for r in records if r["status"] == "error"}
    assert set(errors) == set(farm.names(REFUSING, CHANGED))
    assert all("authentication" in errors[name] for name in farm.names(REFUSING))
    assert all("CHANGED" in errors[name] for name in farm.names(CHANGED))
    for name in farm.names(DROPPING):
        assert (farm.remote_dir(name) / ".dropped").exists()  # the connection did drop mid-bench once

    files = read_manifest(host_bundle).files
    for name in farm.names(SLOW, DROPPING, HEALTHY):
        remote = farm.remote_dir(name)
        assert not list(remote.rglob(f"*{TMP_SUFFIX}")), name
        for file, digest in files.items():
            assert sha256_file(remote / "bundles" / host_bundle.name / file) == digest, (name, file)
