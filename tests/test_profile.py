"""results profile: every kernel of real bundles lands in a named group, the groups add up to the measured
total, MACs follow from the shapes; the classification rules on the call sequences of bundles built here (the tiny
ViT in fp32, int8 and int8-full with ToMe: names as the graph and TVM's fusion make them), and on int8-full's CUDA
op chains (a CUDA bundle cannot run here: that sequence is written out)."""

from __future__ import annotations

import json

import pytest

from results.kernel_groups import GROUPS, Call, classify, macs
from tests.helpers import assert_one_line_error, run_module

I8, U8, I32, F32, I64 = "int8", "uint8", "int32", "float32", "int64"


def _call(name: str, *args: tuple[tuple[int, ...], str]) -> Call:
    return Call(name, tuple(args))


# one block of each graph, as the bundles call them (names and shapes read from the cached DeiT-tiny bundles)
INT8_BLOCK = [
    (_call("fused_layer_norm_multiply1_tir_round_tir_clip_cast1", ((197, 192), F32), ((192,), F32), ((197, 192), I8)),
     "LayerNorm"),
    (_call("fused_int8_dense1_cast2_multiply2_add2_multiply2_tir_round1_tir_clip1_cast3", ((197, 192), I8),
           ((12, 48, 48, 4), I8), ((576,), I32), ((197, 576), I8)), "int8 GEMM"),
    (_call("int8_correction", ((197, 576), I8), ((3, 197), I32)), "attention"),
    (_call("fused_int8_batch_matmul_cast4_multiply3", ((197, 576), I8), ((3, 197), I32), ((3, 197, 197), F32)),
     "attention"),
    (_call("fused_fast_softmax_multiply4_tir_round2_tir_clip2_cast5", ((3, 197, 197), F32), ((3, 197, 197), U8)),
     "softmax"),
    (_call("fused_int8_batch_matmul1_cast6_multiply5_tir_round3_tir_clip3_cast7", ((3, 197, 197), U8),
           ((197, 576), I8), ((3, 197, 64), I8)), "attention"),
    (_call("fused_int8_dense2_cast8_multiply1_add3_add4", ((3, 197, 64), I8), ((4, 48, 48, 4), I8), ((192,), I32),
           ((197, 192), F32), ((197, 192), F32)), "int8 GEMM"),
]
INTEGER_ONLY = [  # int8-full on CUDA: LayerNorm and softmax as chains of unnamed integer kernels
    (_call("concatenate", ((1, 192), I32), ((196, 192), I32), ((197, 192), I32)), "layout / copies"),
    (_call("cast2", ((197, 192), I32), ((197, 192), I64)), "LayerNorm"),
    (_call("sum", ((197, 192), I64), ((197, 1), I64)), "LayerNorm"),
    (_call("isqrt_int64_197", ((197, 1), I64), ((197, 1), I64)), "LayerNorm"),
    (_call("fused_maximum_floor_divide2_multiply3_add5_right_shift1_tir_clip1_cast3", ((197, 1), I64),
           ((197, 192), I64), ((197, 192), I8)), "LayerNorm"),
    (_call("fused_int8_dense1_add7_cast4_multiply5_add8_right_shift2_tir_clip2_cast5", ((197, 192), I8),
           ((12, 48, 48, 4), I8), ((576,), I32), ((197, 576), I8)), "int8 GEMM"),
    (_call("int8_batch_matmul", ((197, 576), I8), ((197, 576), I8), ((3, 197), I32), ((3, 197, 197), I32)),
     "attention"),
    (_call("max", ((3, 197, 197), I32), ((3, 197, 1), I32)), "softmax"),
    (_call("sum1", ((3, 197, 197), I64), ((3, 197, 1), I64)), "softmax"),
    (_call("fused_int8_batch_matmul1_cast8_multiply12_add14_right_shift7_tir_clip4_cast9", ((3, 197, 197), U8),
           ((197, 576), I8), ((3, 197, 64), I8)), "attention"),
    (_call("fused_cast_multiply_tir_round_tir_clip_cast1", ((197, 192), F32), ((197, 192), I8)),
     "requantize / dequantize"),
]
@pytest.mark.parametrize("quant", ["fp32", "int8", "int8-full"])
def test_classification_of_a_built_bundle(data, quant):
    """Every kernel call of the tiny ViT (two blocks, ToMe r=8: the last, token-pooled block skips its merge) in the
    group its place in the graph says, counted: patch, qkv, proj, fc1, fc2 per block and the head are GEMMs; q.k^T
    and p.v per block attention; one softmax per block; ln1 and ln2 per block and the final norm LayerNorm; one ToMe
    matching (unit keys, scores, destinations) and merge."""
    from results.profile import _Profiled
    from tests.helpers import tiny_bundle

    profiled = _Profiled(tiny_bundle(quant, 8))
    groups = profiled.groups
    assert set(groups) <= set(GROUPS) and "other" not in groups, list(zip(profiled.calls, groups))
    gemm = "fp32 GEMM" if quant == "fp32" else "int8 GEMM"
    gemms = [call for call, group in zip(profiled.calls, groups) if group == gemm]
    attention = [call for call, group in zip(profiled.calls, groups) if group == "attention" and macs(call)]
    counts = {group: groups.count(group) for group in ("softmax", "LayerNorm", "ToMe merge")}
    merge = 1 if quant == "int8-full" else 2  # the float graphs add log(size) for proportional attention
    assert (len(gemms), len(attention), counts) == (10, 4, {"softmax": 2, "LayerNorm": 5, "ToMe merge": merge}), groups
    matching = [call.name for call, group in zip(profiled.calls, groups) if group == "ToMe matching"]
    assert sum("tome_destinations" in name for name in matching) == 1 and len(matching) >= 3, matching


@pytest.mark.parametrize("sequence", [INTEGER_ONLY], ids=["int8-full-cuda"])
def test_classification_rules(sequence):
    calls, expected = zip(*sequence)
    assert classify(list(calls)) == list(expected)
    assert set(expected) <= set(GROUPS)


def test_macs_from_shapes():
    qkv, qk, pv, proj = (INT8_BLOCK[i][0] for i in (1, 3, 5, 6))
    assert macs(qkv) == 197 * 576 * 192  # packed weights [N/48, K/4, 48, 4]
    assert macs(qk) == 3 * 197 * 197 * 64  # K = head_dim of the fused qkv activation
    assert macs(pv) == 3 * 197 * 64 * 197
    assert macs(proj) == 197 * 192 * 192  # heads-major input read as [tokens, embed]
    cls_only = _call("fused_int8_dense4_cast8_multiply1_add3_add4_strided_slice_strided_slice1", ((197, 768), I8),
                     ((4, 192, 48, 4), I8), ((192,), I32), ((197, 192), F32), ((1, 192), F32))
    assert macs(cls_only) == 192 * 768 and macs(INT8_BLOCK[0][0]) == 0


@pytest.mark.slow
def test_profile_of_real_bundles(int8_bundle, int8_full_bundle, int8_tome_bundle, tmp_path):
    out = tmp_path / "profile"
    result = run_module("results", "profile", int8_bundle, int8_full_bundle, int8_tome_bundle, "--threads", "2",
                        "--repeat", "2", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out / "profile.md")
    records = [json.loads(line) for line in (out / "profile.jsonl").read_text().splitlines()]
    assert (out / "profile.png").stat().st_size > 0
    summaries = [r for r in records if r["kind"] == "summary"]
    assert [s["bundle"] for s in summaries] == [int8_bundle.name, int8_full_bundle.name, int8_tome_bundle.name]
    for summary in summaries:
        assert summary["cpu"] and summary["threads"] == 2 and summary["tvm"]
        mine = [r for r in records if r["bundle"] == summary["bundle"]]
        groups = {r["group"]: r for r in mine if r["kind"] == "group"}
        assert set(groups) <= set(GROUPS)
        assert sum(r["ms"] for r in groups.values()) == pytest.approx(summary["total_ms"], rel=1e-9)
        kernels = [r for r in mine if r["kind"] == "kernel"]
        assert sum(r["calls"] for r in kernels) == summary["kernel_calls"]
        assert not [r["name"] for r in kernels if r["group"] == "other"]  # DeiT-tiny: every kernel named
        assert groups["int8 GEMM"]["macs"] > 5e8 and groups["int8 GEMM"]["gmacs_per_s"] > 0
    tome = {r["group"] for r in records if r["bundle"] == int8_tome_bundle.name and r["kind"] == "group"}
    assert {"ToMe matching", "ToMe merge"} <= tome
    full = {r["name"]: r["group"] for r in records if r["bundle"] == int8_full_bundle.name and r["kind"] == "kernel"}
    assert {full[n] for n in full if n.startswith("softmax_int")} == {"softmax"}  # one row kernel each
    assert {full[n] for n in full if n.startswith("layer_norm_int")} == {"LayerNorm"}
    assert not [n for n in full if n.startswith("isqrt")]  # the square root is inside the LayerNorm kernel


def test_profile_refuses_a_missing_bundle(tmp_path):
    assert_one_line_error(run_module("results", "profile", tmp_path / "nothing"), "nothing")
