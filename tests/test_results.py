"""results CLI: reports from JSONL and clear errors on bad input."""

import json

from tests.conftest import run_module
from tests.test_bad_input import assert_one_line_error


def test_report_of_missing_or_bad_results(tmp_path):
    assert_one_line_error(run_module("results", "report", tmp_path / "none.jsonl"), "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert_one_line_error(run_module("results", "report", bad), "not JSON lines")


def test_report_keeps_error_records(tmp_path):
    path = tmp_path / "farm.jsonl"
    path.write_text(json.dumps({"board": "b1", "bundle": "x", "status": "error", "error": "board b1: cannot reach"}) + "\n")
    result = run_module("results", "report", path, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "error: board b1: cannot reach" in (tmp_path / "out" / "report.md").read_text()


def test_sweep_refuses_invalid_r_before_compiling():
    assert_one_line_error(run_module("results", "sweep", "--tome-r", "0,16"), "largest valid constant r for this model is 15")
