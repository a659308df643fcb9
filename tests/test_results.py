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


def test_model_weights_stored_or_one_random_init(data, tmp_path):
    from results.model_weights import model_weights
    from runtime.errors import EdgevitError

    stored = model_weights("deit_tiny_patch16_224", tmp_path)
    assert not stored.random_init and stored.path == data / "deit_tiny_patch16_224.safetensors"
    first = model_weights("vit_tiny_patch16_224", tmp_path)
    assert first.random_init and first.path == tmp_path / "vit_tiny_patch16_224-random-init.safetensors"
    made = first.path.stat().st_mtime_ns
    assert model_weights("vit_tiny_patch16_224", tmp_path).path.stat().st_mtime_ns == made  # made once
    with pytest.raises(EdgevitError, match="unknown model 'no_such_vit'"):
        model_weights("no_such_vit", tmp_path)


def test_sweep_table_of_a_random_init_model_has_no_accuracy():
    from results.sweep import markdown_table

    record = {"model": "vit_small_patch16_224", "target": "host", "cpu": "cpu", "threads": 2, "n_images": 0,
              "split": "labels.csv rows 257..", "tome_r": 0, "gflops": 4.6, "top1": None, "top5": None,
              "median_ms": 20.0, "p90_ms": 21.0, "speedup_vs_first": 1.0, "weights": "random init, latency only",
              "random_init": True}
    table = markdown_table([record])
    assert "random init, latency only" in table and "top-1" not in table
    assert "| 0 | 4.60 | 20.00 | 21.00 | 1.00x |" in table
