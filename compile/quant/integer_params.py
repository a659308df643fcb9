"""The integer constants of int8-full, derived from a QuantizedViT (numpy only).

Both the Relax graph (compile.graph.integer_numerics) and the tests' numpy reference of the
integer graph read their constants from here, so a test compares two implementations of the same
integer operations with the same numbers. Conventions (see compile.quant.fixed_point):
rshift_round(x, s) = (x + 2^(s-1)) >> s on int64; requant(x, (m, s)) = rshift_round(x * m, s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from compile.model.vit import Block, LayerNorm
from compile.quant.fixed_point import dyadic
from compile.quant.scales import QBlock, QLinear, QuantizedViT

# Fixed-point formats
NORM_FRAC = 15  # LayerNorm: normalized value (x - mean) / std in Q15
NORM_INV_BITS = 46  # 1 / std as floor(2^46 / std): (x - mean) * inv stays below 2^52
GAMMA_FRAC = 16  # LayerNorm gamma / scale in Q16 (beta in Q31 = NORM_FRAC + GAMMA_FRAC)
EXP_FRAC = 15  # softmax: base-2 exponent and 2^-f in Q15
EXP_MIN = 30  # softmax: 2^-30 and below count as 0
PROB_RECIP_BITS = 31  # softmax: 1 / sum as floor(2^31 / sum)
GELU_FRAC = 12  # GELU input and output in Q12
GELU_CLAMP = 1 << 20  # |GELU input| < 256
RESIDUAL_CLAMP = 1 << 30
# 2^-f ~= 1 + EXP_C1 f + EXP_C2 f^2 on [0, 1) (least squares, Q15); erf(v) ~= 1 + ERF_A (min(v, ERF_B) - ERF_B)^2
# on v >= 0 (I-BERT's second-order erf), ERF_A in Q15, ERF_B in Q12; 1/sqrt(2) in Q15.
ERF_A = round(-0.2888 * 2**15)
ERF_B = round(1.769 * 2**GELU_FRAC)
INV_SQRT2 = round(2**15 / math.sqrt(2))
# the smallest |GELU input| (Q12) whose erf argument reaches ERF_B: from there on erf is exactly +-1
GELU_SATURATION = -(-((ERF_B << 15) - (1 << 14)) // INV_SQRT2)
# QuickGELU x * sigmoid(1.702 x): e^(-1.702 |x|) = 2^-(|x| * 1.702 log2(e)), the base-2 exponent in Q15 from x in Q12
QUICK_GELU_EXP = round(1.702 * math.log2(math.e) * 2**EXP_FRAC)


@cache
def exp2_poly() -> tuple[int, int]:
    """(C1, C2) in Q15 with 2^-f ~= 1 + C1 f + C2 f^2 (least squares on [0, 1), constant term fixed to 1)."""
    f = np.linspace(0.0, 1.0, 4097)
    basis = np.stack([f, f * f], axis=1)
    c1, c2 = np.linalg.lstsq(basis, np.exp2(-f) - 1.0, rcond=None)[0]
    return round(c1 * 2**EXP_FRAC), round(c2 * 2**EXP_FRAC)


def _int32(values) -> np.ndarray:
    return np.clip(np.round(np.asarray(values, dtype=np.float64)), -(2**31) + 1, 2**31 - 1).astype(np.int32)


@dataclass(frozen=True)
class Requant:
    """Per-column (or scalar) dyadic multiplier: y = rshift_round(x * mult, shift)."""

    mult: np.ndarray  # int64
    shift: np.ndarray  # int64

    @classmethod
    def of(cls, multiplier) -> "Requant":
        return cls(*dyadic(multiplier))


def bias_int(linear: QLinear) -> np.ndarray:
    """The bias in accumulator units (added to the int32 accumulator before any requantization)."""
    return _int32(linear.bias / linear.acc_scale)


def to_residual(linear: QLinear, qvit: QuantizedViT) -> Requant:
    """accumulator -> residual stream units."""
    return Requant.of(linear.acc_scale / qvit.residual_scale)


def embedding(qvit: QuantizedViT) -> tuple[np.ndarray, np.ndarray]:
    """(prefix tokens [P, C], position embedding of the patches [patches, C]) in residual units."""
    return _int32(qvit.vit.prefix / qvit.residual_scale), _int32(qvit.vit.pos / qvit.residual_scale)


@dataclass(frozen=True)
class LayerNormParams:
    gamma: np.ndarray  # int64 [C]: gamma / output scale in Q(gamma_frac)
    beta: np.ndarray  # int64 [C]: beta / output scale in Q(NORM_FRAC + gamma_frac)
    eps: int  # in input units squared
    low: int
    high: int
    gamma_frac: int = GAMMA_FRAC

    @property
    def shift(self) -> int:
        """The rounding shift that brings z * gamma + beta to output units."""
        return NORM_FRAC + self.gamma_frac


def _layer_norm_params(norm: LayerNorm, out_scale, in_scale: float, low: int, high: int,
                       gamma_frac: int = GAMMA_FRAC) -> LayerNormParams:
    scale = np.asarray(out_scale, dtype=np.float64)
    gamma = np.round(norm.gamma / scale * 2.0**gamma_frac).astype(np.int64)
    beta = np.round(norm.beta / scale * 2.0 ** (NORM_FRAC + gamma_frac)).astype(np.int64)
    eps = max(1, round(norm.eps / in_scale**2))
    return LayerNormParams(gamma, beta, eps, low, high, gamma_frac)


def layer_norm(norm: LayerNorm, linear: QLinear, qvit: QuantizedViT) -> LayerNormParams:
    """LayerNorm whose output is directly the next linear's int8 input (its per-channel scales)."""
    return _layer_norm_params(norm, linear.input_scale, qvit.residual_scale, *linear.input_range)


def residual_layer_norm(norm: LayerNorm, qvit: QuantizedViT) -> LayerNormParams:
    """norm_pre: a LayerNorm from the residual stream back into it (int32 at the residual scale). gamma's
    fraction bits shrink with that fine scale so that z * gamma stays far inside int64."""
    top = max(float(np.abs(norm.gamma).max()) / qvit.residual_scale, 1.0)
    gamma_frac = int(np.clip(30 - math.ceil(math.log2(top)), 1 - NORM_FRAC, GAMMA_FRAC))
    return _layer_norm_params(norm, qvit.residual_scale, qvit.residual_scale, -RESIDUAL_CLAMP, RESIDUAL_CLAMP,
                              gamma_frac)


def qk_norm_in(block: QBlock) -> tuple[Requant, Requant]:
    """qkv accumulator columns of q and of k -> int32 at their power-of-two pre-norm scales."""
    width = block.qkv.weight.shape[1] // 3
    acc = block.qkv.acc_scale.astype(np.float64)
    return tuple(Requant.of(acc[j * width:(j + 1) * width] / block.qk_pre_scales[j]) for j in range(2))


def qk_layer_norms(block: Block, qblock: QBlock) -> tuple[LayerNormParams, LayerNormParams]:
    """The q and k LayerNorms (over each head's channels), from their pre-norm units to int8 q / k."""
    norms, pre = (block.q_norm, block.k_norm), qblock.qk_pre_scales
    return tuple(_layer_norm_params(norms[j], qblock.qkv_scales[j], pre[j], -127, 127) for j in range(2))


def v_requant(block: QBlock) -> Requant:
    """qkv accumulator columns of v -> int8 v (a q/k norm leaves v as it is)."""
    width = block.qkv.weight.shape[1] // 3
    return Requant.of(block.qkv.acc_scale[2 * width:].astype(np.float64) / block.qkv_scales[2])


def qkv_requant(block: QBlock) -> Requant:
    """qkv accumulator -> int8 q, k, v (one scale each)."""
    width = block.qkv.weight.shape[1] // 3
    out_scale = np.repeat(np.asarray(block.qkv_scales, np.float64), width)
    return Requant.of(block.qkv.acc_scale / out_scale)


def logit_scale(block: QBlock, num_heads: int) -> float:
    head_dim = block.qkv.weight.shape[1] // 3 // num_heads
    return block.qkv_scales[0] * block.qkv_scales[1] / math.sqrt(head_dim)


def softmax_exponent(block: QBlock, num_heads: int) -> Requant:
    """logit units -> base-2 exponent in Q15 (multiply by log2(e))."""
    return Requant.of(logit_scale(block, num_heads) * math.log2(math.e) * 2**EXP_FRAC)


def log_size_table(block: QBlock, num_heads: int, tokens: int) -> np.ndarray:
    """ln(size) in logit units for size 0..tokens (proportional attention; entry 0 is unused)."""
    sizes = np.arange(tokens + 1, dtype=np.float64)
    return _int32(np.log(np.maximum(sizes, 1)) / logit_scale(block, num_heads))


def prob_levels(block: QBlock, num_heads: int) -> np.ndarray:
    """int64 [heads, 1, 1]: 1 / each head's probability scale (255 << its shift)."""
    return np.round(1.0 / block.prob_scales(num_heads)).astype(np.int64)


def attention_out_requant(block: QBlock, num_heads: int) -> Requant:
    """probs @ v accumulator [heads, N, D] -> proj's int8 input (a multiplier per head)."""
    req = Requant.of(block.prob_scales(num_heads).ravel() * block.qkv_scales[2] / block.proj.input_base)
    return Requant(req.mult.reshape(num_heads, 1, 1), req.shift.reshape(num_heads, 1, 1))


def gelu_in(fc1: QLinear) -> Requant:
    """fc1 accumulator -> GELU input in Q12."""
    return Requant.of(fc1.acc_scale * 2**GELU_FRAC)


def gelu_out(fc2: QLinear) -> tuple[Requant, np.ndarray]:
    """GELU output (Q12) -> fc2's int8 input: a common multiplier, then each channel's group shift."""
    shifts = np.zeros(fc2.weight.shape[0], dtype=np.int64)
    for start, stop, shift in fc2.segments:
        shifts[start:stop] = shift
    requant = Requant.of(2.0**-GELU_FRAC / fc2.input_base)
    return Requant(requant.mult, requant.shift + shifts), shifts


def head_scale(linear: QLinear) -> np.ndarray:
    """accumulator -> float logits (the one float multiply, at the graph's output)."""
    return linear.acc_scale.astype(np.float32)
