"""RecordLog: records appended one complete line at a time, a torn last line cut off, one writer at a time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from results.records import RecordLog
from runtime.errors import EdgevitError
from tests.helpers import REPO


def test_records_survive_reopening_and_a_torn_last_line_is_cut(tmp_path):
    path = tmp_path / "sub" / "farm.jsonl"
    with RecordLog(path) as log:
        log.append({"board": "a", "status": "ok"})
        log.append({"board": "b", "status": "error"})
    with open(path, "a") as f:  # a writer killed inside its write
        f.write('{"board": "c", "sta')
    with RecordLog(path) as log:
        assert [r["board"] for r in log.records()] == ["a", "b"]
        log.append({"board": "c", "status": "ok"})
    assert [json.loads(line)["board"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_a_corrupt_line_is_named(tmp_path):
    path = tmp_path / "farm.jsonl"
    path.write_text('{"board": "a"}\nnot json\n')
    with pytest.raises(EdgevitError, match=f"{path}:2: not a JSON record"):
        RecordLog(path).__enter__()


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "farm.jsonl"
    with RecordLog(path):
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from results.records import RecordLog; RecordLog(sys.argv[1]).__enter__()",
             str(path)], cwd=REPO, capture_output=True, text=True)
        assert other.returncode != 0 and f"{path} is being written by another process" in other.stderr
    with RecordLog(path) as log:  # free again once the first writer is done
        assert log.records() == []


def test_a_full_disk_is_one_error_and_leaves_no_torn_line(tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        path = disk / "farm.jsonl"
        with RecordLog(path) as log:
            log.append({"board": "a"})
            with pytest.raises(EdgevitError, match=f"cannot append to {path}: No space left on device"):
                log.append({"board": "b", "padding": "x" * 100_000})
        assert path.read_text() == '{"board": "a"}\n'
    finally:
        subprocess.run(["umount", str(disk)], check=True)
