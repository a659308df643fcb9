"""What one GEMM computes in each layer format (compile.quant.formats), and its output error there (MoFQ's
per-layer measure).

A QLinear's formats, all on rows x [.., K] of its input (x - offset for the patch embedding), W its float weight:
- float32: x @ W + b;
- float16: x and W rounded to float16, the products accumulated in float16 in k order with one rounding per
  multiply-add, as compile.graph.gemm.Float16Gemm's kernels do (`half_accumulated`), then the float32 bias;
- int8:    x_q @ W_eff + b, x_q = clip(round(x / input_scale)) and W_eff the int8 weight times its
           column scales and each row's step (input_base * 2^shift, see compile.quant.scales);
- w4a8:    the same int8 input, W_eff from the int4 weight (compile.quant.int4) of the recipe's rounding.
The relative error ||y - y_float32||^2 / ||y_float32||^2 on calibration rows is what --quant mixed starts
from; `attach_int4` computes it for every format and both int4 roundings.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from compile.quant.config import QuantConfig
from compile.quant.formats import FLOAT16, FLOAT32, INT8, W4A8
from compile.quant.gptq import quantize_gptq
from compile.quant.hessian import Gram
from compile.quant.int4 import Int4Weight, quantize_rtn

if TYPE_CHECKING:
    from compile.quant.scales import QLinear


class FormatLinear(nn.Module):
    """A GEMM in one format, as a torch module on rows [..., K] (float32 or, after .double(), float64)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, input_scale: np.ndarray | None = None,
                 input_range: tuple[int, int] = (-127, 127), half: bool = False):
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(np.asarray(weight, np.float32)))
        self.register_buffer("bias", torch.from_numpy(np.asarray(bias, np.float32)))
        scale = None if input_scale is None else torch.from_numpy(np.asarray(input_scale, np.float32))
        self.register_buffer("input_scale", scale)
        self.input_range = input_range
        self.half = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = torch.clamp(torch.round(x / self.input_scale), *self.input_range)
        if self.half:
            return half_accumulated(x, self.weight) + self.bias
        return x @ self.weight + self.bias


def half_accumulated(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., K] @ weight [K, N] in float16: both rounded to float16, acc = fl16(acc + x_k w_k) for k = 0..K-1, in x's
    dtype. The kernel rounds each fused step once; here the step (exact in float64) goes through float32 on its way
    to float16 (torch converts so), which differs in ties only: one float16 ulp on ~2% of the outputs at K = 768
    (tests/test_float16_gemm.py). K steps of torch ops: slow, as a simulation of what the kernel rounds."""
    xh, wh = x.half().to(x.dtype), weight.half().to(x.dtype)
    acc = torch.zeros((*x.shape[:-1], weight.shape[1]), dtype=x.dtype)
    for k in range(weight.shape[0]):
        acc = torch.addcmul(acc, xh[..., k:k + 1], wh[k]).half().to(x.dtype)
    return acc


def format_linear(linear: QLinear, fmt: str, float_weight: np.ndarray, int4: Int4Weight | None = None) -> FormatLinear:
    """`linear` (float weight `float_weight`) as it computes in `fmt` (w4a8: with `int4`, else the int4 weight
    attach_int4 gave it)."""
    if fmt == FLOAT32:
        return FormatLinear(float_weight, linear.bias)
    if fmt == FLOAT16:
        return FormatLinear(float_weight.astype(np.float16), linear.bias, half=True)
    if fmt == INT8:
        weight = linear.weight.astype(np.float64) * linear.weight_scale
    elif fmt == W4A8:
        weight = (int4 or linear.int4).dequantize()
    else:
        raise ValueError(f"no layer format '{fmt}'")
    return FormatLinear(weight * linear.row_steps()[:, None], linear.bias, linear.input_scale, linear.input_range)


def format_error(module: FormatLinear, linear: QLinear, float_weight: np.ndarray, samples: np.ndarray) -> float:
    """||y - y_float32||^2 / ||y_float32||^2 over calibration rows `samples` [S, K] (float64)."""
    if len(samples) == 0:
        return 0.0
    x = torch.from_numpy(samples.astype(np.float64))
    reference = x @ torch.from_numpy(float_weight.astype(np.float64)) + torch.from_numpy(linear.bias.astype(np.float64))
    with torch.no_grad():
        y = module.double()(x)
    return float(((y - reference) ** 2).sum() / max(float((reference**2).sum()), 1e-30))


def int4_weights(linear: QLinear, float_weight: np.ndarray, gram: Gram, group: int) -> dict[str, Int4Weight]:
    """The int4 weight of `linear` by each rounding: {"rtn": ..., "gptq": ...}.

    Both quantize the folded weight (the one int8 quantizes per column); GPTQ's Hessian is X^T X of the
    inputs in the same units, x / (input_scale / row_steps)."""
    folded = linear.folded_weight(float_weight)
    hessian = gram.scaled(linear.row_steps() / linear.input_scale.astype(np.float64))
    return {"rtn": quantize_rtn(folded, group), "gptq": quantize_gptq(folded, hessian, group)}


def attach_int4(linear: QLinear, float_weight: np.ndarray, gram: Gram, samples: np.ndarray,
                config: QuantConfig) -> QLinear:
    """`linear` with its int4 weight (the recipe's rounding of one layer) and its error in every format (`errors`;
    "w4a8" is that rounding's)."""
    with one_thread():
        weights = int4_weights(linear, float_weight, gram, config.w4_group)
        errors = {f"w4a8-{rounding}": format_error(format_linear(linear, W4A8, float_weight, weight), linear,
                                                   float_weight, samples)
                  for rounding, weight in weights.items()}
        errors[FLOAT16] = format_error(format_linear(linear, FLOAT16, float_weight), linear, float_weight, samples)
    errors = {FLOAT32: 0.0, INT8: linear.rel_error, W4A8: errors[f"w4a8-{config.layer_rounding}"], **errors}
    return dataclasses.replace(linear, int4=weights[config.layer_rounding], errors=errors)


@contextmanager
def one_thread():
    """torch on one thread: these small factorizations and GEMMs run 5-50x slower on two threads of a busy
    machine (OpenMP threads wait on each other) and gain little on an idle one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
