"""Which part of the model a compiled kernel belongs to: the one table `results profile` groups by.

A bundle's kernels are TIR PrimFuncs named after the Relax operators fused into them
(`fused_int8_dense3_cast9_multiply6_add5_gelu_...`). The name says most: a GEMM with its epilogue
is a GEMM, `layer_norm` is LayerNorm (int8-full's row kernels on CPUs: `layer_norm_int_*`,
`softmax_int_*`). Where names say nothing (int8-full on CUDA spells LayerNorm and softmax as chains
of `sum`, `isqrt`, `right_shift` kernels; ToMe's matching reuses `cast_sum` and a small batch
matmul), the call sequence and the shapes decide:

- every kernel after the last token-wise GEMM and up to a `tome_destinations` is ToMe matching;
- a GEMM whose output is [heads, tokens, n] is attention: q·kᵀ when n is the token count, else p·v;
- a run of unnamed kernels between a q·kᵀ and its p·v is softmax; one holding an `isqrt` is LayerNorm;
- `int8_correction` (the zero-point row sums of the uint8 x int8 trick) belongs to the GEMM it feeds.

A kernel is one call: (name, [(shape, dtype) of each tensor argument]), outputs last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Arg = tuple[tuple[int, ...], str]  # (shape, dtype) of one tensor argument


@dataclass(frozen=True)
class Call:
    """One kernel call of an inference, in order."""

    name: str
    args: tuple[Arg, ...]


GROUPS = {  # group -> what it holds; the order of the profile table
    "int8 GEMM": "token-wise int8 x int8 -> int32 GEMMs (qkv, proj, fc1, fc2, patch embedding, head) with fused epilogues",
    "fp32 GEMM": "token-wise float GEMMs",
    "attention": "per-head q·kᵀ and p·v batch matmuls (int8 or float), with their zero-point corrections",
    "softmax": "attention softmax (float, or the integer-only chain)",
    "LayerNorm": "LayerNorm (float with fused quantization, or the integer-only chain with isqrt)",
    "GELU": "GELU not fused into a GEMM",
    "requantize / dequantize": "stand-alone casts, scalings, rounding, clipping between integer and float",
    "ToMe matching": "ToMe's key slice, normalisation, similarity GEMM and bipartite matching",
    "ToMe merge": "ToMe's weighted merge and size bookkeeping (log s for proportional attention)",
    "layout / copies": "reshape, transpose, concatenate, take, slices",
    "other": "anything else (residual adds, scalings the graph did not fuse)",
    "VM and allocation overhead": "wall time minus all kernels: VM instructions, allocation, argument packing",
}

INT8_GEMM = re.compile(r"int8_(dense|matmul|batch_matmul)")
FLOAT_GEMM = re.compile(r"(^|_)(dense|matmul|batch_matmul)\d*(_|$)")
NAME_RULES = (  # (pattern, group), first match wins; GEMM names are split by their output shape
    (re.compile(r"tome_destinations"), "ToMe matching"),
    (re.compile(r"tome_merge|tir_log"), "ToMe merge"),
    (re.compile(r"layer_norm"), "LayerNorm"),
    (re.compile(r"softmax"), "softmax"),
    (re.compile(r"gelu"), "GELU"),
)
LAYOUT = re.compile(r"(fused_)?((reshape|transpose|concatenate|concat|take|strided_slice|expand_dims|squeeze|"
                    r"broadcast_to|copy|split|layout_transform)\d*_?)+")
REQUANT = re.compile(r"(fused_)?((cast|multiply|add|subtract|right_shift|tir_round|round|tir_clip|clip|divide|"
                     r"floor_divide|maximum|minimum)\d*_?)+")
CORRECTION = re.compile(r"int8_correction")


def is_gemm(name: str) -> bool:
    return bool(INT8_GEMM.search(name) or FLOAT_GEMM.search(name))


def _named_group(call: Call) -> str | None:
    """The group a kernel's name (and, for GEMMs, its output shape) gives it, or None."""
    if is_gemm(call.name):
        if len(call.args[-1][0]) == 3:
            return "attention"
        return "int8 GEMM" if INT8_GEMM.search(call.name) else "fp32 GEMM"
    return next((group for pattern, group in NAME_RULES if pattern.search(call.name)), None)


def _is_qk(call: Call) -> bool:
    """An attention GEMM whose output is [heads, n, n] (the logits), not p·v's [heads, n, head_dim]."""
    shape = call.args[-1][0]
    return len(shape) == 3 and shape[1] == shape[2]


def classify(calls: list[Call]) -> list[str]:
    """The group of every call, in order (see the module docstring for the rules)."""
    groups: list[str | None] = [_named_group(c) for c in calls]
    last_gemm = -1
    for i, call in enumerate(calls):  # ToMe matching: everything between the last token-wise GEMM and the match
        if groups[i] in ("int8 GEMM", "fp32 GEMM"):
            last_gemm = i
        elif "tome_destinations" in call.name:
            groups[last_gemm + 1:i + 1] = ["ToMe matching"] * (i - last_gemm)
    for i, call in enumerate(calls):
        if groups[i] is None and LAYOUT.fullmatch(call.name):
            groups[i] = "layout / copies"
    i = 0
    while i < len(calls):  # runs of kernels no rule named yet: integer softmax or LayerNorm chains
        if groups[i] is not None or CORRECTION.search(calls[i].name):
            i += 1
            continue
        end = i
        while end < len(calls) and groups[end] is None and not CORRECTION.search(calls[end].name):
            end += 1
        before = next((j for j in range(i - 1, -1, -1) if groups[j] == "attention"), None)
        after = next((j for j in range(end, len(calls)) if groups[j] is not None), None)
        if (before is not None and _is_qk(calls[before]) and after is not None and groups[after] == "attention"
                and not _is_qk(calls[after])):
            groups[i:end] = ["softmax"] * (end - i)
        elif any("isqrt" in c.name for c in calls[i:end]):
            groups[i:end] = ["LayerNorm"] * (end - i)
        else:
            groups[i:end] = ["requantize / dequantize" if REQUANT.fullmatch(c.name) else "other" for c in calls[i:end]]
        i = end
    for i in range(len(calls) - 1, -1, -1):  # a zero-point correction goes with the GEMM it feeds
        if groups[i] is None:
            groups[i] = next((g for g in groups[i + 1:] if g is not None), "other")
    return groups  # type: ignore[return-value]  # every entry is set above


def macs(call: Call) -> int:
    """Multiply-accumulates of a GEMM call from its shapes (0 for other kernels).

    Token-wise GEMM: A [.., K] (any leading shape, M = |A| / K), W either [K, N] or packed
    [N/n, K/k, n, k] (VNNI / sdot layouts), output [.., N]; an output sliced in the same kernel (the class
    token of the last block) counts only the rows it keeps. Batch matmul with output [heads, m, n]:
    A is [heads, m, K], or the fused qkv activation [tokens, 3 * heads * head_dim] for q·kᵀ (K = head_dim).
    """
    if not is_gemm(call.name) or len(call.args) < 2:
        return 0
    a, out = call.args[0][0], call.args[-1][0]
    out_numel = _numel(out)
    if len(out) == 3:
        k = a[-1] // (3 * out[0]) if len(a) == 2 else a[-1]
        return out_numel * k
    w = call.args[1][0]
    k = w[1] * w[3] if len(w) == 4 else w[-2]
    return min(_numel(a) // k, out_numel // out[-1]) * out[-1] * k


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
