"""results CLI: reports from JSONL and clear errors on bad input."""

import json
from pathlib import Path

import pytest

from results.__main__ import parse_args
from tests.helpers import assert_one_line_error, run_module


def test_report_of_missing_or_bad_results(tmp_path):
    assert_one_line_error(run_module("results", "report", tmp_path / "none.jsonl"), "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert_one_line_error(run_module("results", "report", bad), "not JSON lines")


def test_report_keeps_error_records(tmp_path):
    path = tmp_path / "farm.jsonl"
    record = {"board": "b1", "bundle": "x", "status": "error", "error": "board b1: cannot reach"}
    path.write_text(json.dumps(record) + "\n")
    result = run_module("results", "report", path, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "error: board b1: cannot reach" in (tmp_path / "out" / "report.md").read_text()


def test_sweep_refuses_invalid_r_before_compiling():
    assert_one_line_error(run_module("results", "sweep", "--tome-r", "0,16"),
                          "largest valid constant r for this model is 15")


def test_shared_options_before_or_after_the_subcommand():
    before = parse_args(["--out", "x", "--model", "m", "--limit", "3", "bench", "--peers", "none"])
    after = parse_args(["bench", "--peers", "none", "--out", "x", "--model", "m", "--limit", "3"])
    assert before == after and (before.out, before.model, before.limit) == (Path("x"), "m", 3)
    assert parse_args(["--out", "r", "report", "f.jsonl"]) == parse_args(["report", "f.jsonl", "--out", "r"])
    assert parse_args(["sweep"]).out == Path("results/data/tome_sweep")  # the command's default when not given


def test_shared_option_of_another_command_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model", "m", "report", "f.jsonl"])
    assert exit_info.value.code == 2 and "--model does not apply to 'report'" in capsys.readouterr().err
