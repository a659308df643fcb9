"""python -m results bench end to end on a tiny budget (the peers CI has), and its building blocks.

No timing is asserted: the machine is shared. Top-1 values are checked against PyTorch on the same
images, computed here.
"""

from __future__ import annotations

from results.peers.table import markdown_table
from results.records import read_jsonl
from tests.helpers import assert_one_line_error, run_module
from tests.reference import timm_top1

CI_PEERS = ("pytorch-eager-fp32", "onnxruntime-fp32", "onnxruntime-int8-static", "onnxruntime-int8-dynamic")
N_IMAGES = 20


def test_bench_suite_end_to_end(host_bundle, images_dir, tmp_path):
    out = tmp_path / "out"
    result = run_module("results", "bench", host_bundle, "--peers", ",".join(CI_PEERS), "--limit", N_IMAGES,
                        "--rounds", 1, "--calib-images", 16, "--memory-runs", 2, "--threads", 2,
                        "--build-dir", tmp_path / "build", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out / "bench.md")

    records = read_jsonl(out / "bench.jsonl")
    assert [r["contender"] for r in records] == [*CI_PEERS, "edgevit-fp32", "edgevit-fp32-native"]
    reference = timm_top1(images_dir, N_IMAGES)
    for r in records:
        assert r["status"] == "ok" and r["n_images"] == N_IMAGES and r["threads"] == 2 and r["batch"] == 1, r
        assert r["cpu"] and r["machine"] and {"torch", "onnxruntime", "apache-tvm"} <= set(r["versions"]), r
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["n"] == 5, r
        if r["runtime"] == "edgevit-native":  # the bundle's bin/edgevit-run, its own process: no interpreter
            assert r["peak_rss_mb"] > 0 and "peak_rss_growth_mb" not in r, r
        else:
            assert r["peak_rss_mb"] > r["peak_rss_growth_mb"] > 0, r
        assert r["top1"] <= r["top5"] <= 1.0, r
        int8 = r["recipe"].get("quant") in ("static", "dynamic")
        # FP32 contenders compute the same function: at most one near-tie may flip on 20 images;
        # INT8 recipes may flip a few more
        assert abs(r["top1"] - reference) <= (3 if int8 else 1) / N_IMAGES, (r["contender"], r["top1"], reference)
        assert r["best_ort_int8"] in ("onnxruntime-int8-static", "onnxruntime-int8-dynamic")
    assert records[1]["speedup_vs_ort_fp32"] == 1.0
    assert records[2]["recipe"]["calibration_images"] == 16

    table = (out / "bench.md").read_text()
    assert all(f"| {r['contender']} |" in table for r in records)
    assert "![latency vs top-1](bench.png)" in table
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unavailable_contender_is_a_row_with_its_reason():
    common = {"model": "m", "threads": 2, "spin_wait": False, "cpu": "cpu", "machine": "x86_64", "time_utc": "t",
              "n_images": 3, "split": "rows 257.."}
    records = [
        {"contender": "onnxruntime-fp32", "status": "ok", "runtime": "onnxruntime", "recipe": {"quant": "none"},
         "median_ms": 20.0, "p90_ms": 22.0, "top1": 1.0, "top5": 1.0, "speedup_vs_ort_fp32": 1.0, **common},
        {"contender": "litert-int8", "status": "unavailable", "reason": "litert_torch is not installed", **common},
    ]
    table = markdown_table(records)
    assert "| litert-int8 | not available: litert_torch is not installed |" in table
    assert "| onnxruntime-fp32 | 20.00 | 22.00 | 1.00x | - |" in table


def test_missing_runtime_makes_a_peer_unavailable(monkeypatch, tmp_path):
    from results.peers import prepare as peers

    def needs_executorch(ctx):
        raise ModuleNotFoundError("No module named 'executorch'", name="executorch")

    monkeypatch.setitem(peers.PEERS, "executorch-xnnpack-int8", needs_executorch)
    got = peers.prepare_peer("executorch-xnnpack-int8", peers.PeerContext("deit_tiny_patch16_224", tmp_path, 4))
    hint = "executorch is not installed (pip install -e '.[peers]')"
    assert got == peers.Unavailable("executorch-xnnpack-int8", hint)


def test_calibration_and_evaluation_splits_are_disjoint(labels_csv):
    from compile.data import CALIBRATION_ROWS, evaluation_rows
    from runtime.evaluate import read_labels

    calibration = {name for name, _ in read_labels(labels_csv, limit=CALIBRATION_ROWS)}
    evaluation = {name for name, _ in evaluation_rows(None)}
    assert len(calibration) == CALIBRATION_ROWS and evaluation and not calibration & evaluation


def test_bench_refuses_bad_input():
    assert_one_line_error(run_module("results", "bench", "--peers", "onnxruntime-fp16"),
                          "unknown peer 'onnxruntime-fp16'")
    assert_one_line_error(run_module("results", "bench", "--peers", "none", "--edgevit", "int4"),
                          "unknown edgevit mode 'int4'")
    assert_one_line_error(run_module("results", "bench", "--peers", "none"), "nothing to measure")
    assert_one_line_error(run_module("results", "bench", "--calib-images", "300"), "--calib-images")


def test_bench_of_a_model_without_stored_weights_is_latency_only(tmp_path):
    """--model with no weights on this machine: every contender loads one random init, no accuracy columns."""
    out, build = tmp_path / "out", tmp_path / "build"
    peers = ("pytorch-eager-fp32", "onnxruntime-fp32")
    result = run_module("results", "bench", "--model", "vit_tiny_patch16_224", "--peers", ",".join(peers),
                        "--rounds", 1, "--memory-runs", 0, "--threads", 2, "--build-dir", build, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(out / "bench.jsonl")
    assert [r["contender"] for r in records] == list(peers)
    for r in records:
        assert r["status"] == "ok" and r["model"] == "vit_tiny_patch16_224" and r["median_ms"] > 0, r
        assert r["random_init"] and r["weights"] == "random init, latency only" and r["top1"] is None, r
    assert (build / "vit_tiny_patch16_224-random-init.safetensors").is_file()
    table = (out / "bench.md").read_text()
    assert "random init, latency only" in table and "| top-1 |" not in table
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
