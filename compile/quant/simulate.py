"""A QuantizedViT simulated in torch: the float timm model with each GEMM in its layer format.

Fake quantization, not the integer graph: every GEMM is replaced by its QLinear in its format of the
layer table (compile.quant.format_error: int8 input at the calibrated scales, int8 / int4 / float16 /
float32 weights), and the activations the integer graph feeds its attention matmuls are rounded to
their int8 (q, k, v) and uint8 (probabilities) grids. LayerNorm, softmax, GELU and the residual
stay float32 as in --quant int8. It tells what a format costs in accuracy before a kernel for it
exists, and it is what the accuracy estimate of --quant mixed differentiates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from compile.model.tome_patch import transformer_blocks
from compile.quant.calibration import image_patches
from compile.quant.format_error import format_linear
from compile.quant.formats import FLOAT32, INT8, LayerFormats
from compile.quant.scales import QBlock, QLinear, QuantizedViT

# What a quantization point does with (its name, the float tensor, that tensor on its grid): the simulation
# returns the grid values; the accuracy estimate keeps the float ones and records both.
Quantizer = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]


def on_grid(name: str, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return q


class SimulatedGemm(nn.Module):
    """One GEMM of the model (nn.Linear, or the patch embedding's stride-p Conv2d) as its QLinear in `fmt`.

    `taps`, when a list, receives (name, input rows, output rows) of every call: the output keeps its gradient."""

    def __init__(self, linear: QLinear, fmt: str, float_weight: np.ndarray, patch: int = 0):
        super().__init__()
        self.name = linear.name
        self.compute = format_linear(linear, fmt, float_weight)
        self.register_buffer("offset", None if linear.input_offset is None else torch.from_numpy(linear.input_offset))
        self.patch = patch
        self.taps: list | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = image_patches(x, self.patch) if self.patch else x
        if self.offset is not None:
            rows = rows - self.offset
        y = self.compute(rows)
        if self.taps is not None:
            y.retain_grad()
            self.taps.append((self.name, rows.detach(), y))
        if self.patch:  # [B, patches, C] -> the Conv2d's [B, C, H/p, W/p]
            side = x.shape[-1] // self.patch
            y = y.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        return y


def simulated_model(model: nn.Module, qvit: QuantizedViT, formats: LayerFormats | dict[str, str],
                    quantizer: Quantizer | None = on_grid, straight: bool = False) -> nn.Module:
    """A copy of `model` (float timm ViT, ToMe-patched or not) computing like `qvit` with the linear layers in
    their `formats` (the layer table, or layer name -> format). quantizer: what the int8 / uint8 points of an int8
    attention do (None: nothing, the float model's attention); a block's attention is int8 unless `formats` gives
    it float32. straight: the attention's roundings pass gradients straight through (learning the rounding of
    weights before them, compile.quant.block_rounding); else rounding has no gradient."""
    sim = copy.deepcopy(model).eval()
    weights = {linear.name: linear.weight for linear in qvit.vit.linears()}  # fc1 / fc2 permuted as qvit's
    table = dict(formats.table) if isinstance(formats, LayerFormats) else formats

    def gemm(linear: QLinear, patch: int = 0) -> SimulatedGemm:
        return SimulatedGemm(linear, formats[linear.name], weights[linear.name], patch)

    sim.patch_embed.proj = gemm(qvit.patch, sim.patch_embed.patch_size[0])
    blocks = transformer_blocks(sim)
    for block, qblock, described in zip(blocks, qvit.blocks, qvit.vit.blocks):
        attn, mlp = block.attn, block.mlp
        attn.qkv, attn.proj, mlp.fc1, mlp.fc2 = (gemm(q) for q in (qblock.qkv, qblock.proj, qblock.fc1, qblock.fc2))
        block.ls1, block.ls2 = nn.Identity(), nn.Identity()  # LayerScale is folded into proj and fc2 (the description)
        attn.fused_attn = False
        if quantizer is not None and table.get(described.attention, INT8) != FLOAT32:
            _quantize_attention(attn, qblock, described.q_norm is not None, qvit.vit.num_heads, quantizer,
                                straight_through if straight else torch.round)
    sim.head = gemm(qvit.heads[0])
    if len(qvit.heads) > 1:
        sim.head_dist = gemm(qvit.heads[1])
    return sim


class _StraightThrough(torch.autograd.Function):
    """round() forward, the identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        return gradient


def straight_through(x: torch.Tensor) -> torch.Tensor:
    """torch.round(x), with the gradient of the identity."""
    return _StraightThrough.apply(x)


def _quantize_attention(attn: nn.Module, qblock: QBlock, normed: bool, heads: int, quantizer: Quantizer,
                        rounding: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Hooks that put q, k, v on their int8 grids (q and k after a q/k norm when there is one) and the probabilities
    on their uint8 grid per head, as the integer graph's attention matmuls read them."""
    def fake(x: torch.Tensor, scale, low: int, high: int) -> torch.Tensor:
        return torch.clamp(rounding(x / scale), low, high) * scale

    name = attn.qkv.name
    width = qblock.qkv.weight.shape[1] // 3
    scales = torch.tensor(qblock.qkv_scales, dtype=torch.float32).repeat_interleave(width)
    if normed:
        for part, norm in zip((0, 1), (attn.q_norm, attn.k_norm)):
            norm.register_forward_hook(lambda m, a, out, part=part: quantizer(
                f"{name}.{'qk'[part]}", out, fake(out, qblock.qkv_scales[part], -127, 127)))
        scales[: 2 * width] = 0  # marks q and k: quantized after their norm
    attn.qkv.register_forward_hook(lambda m, a, out: quantizer(
        f"{name}.out", out, torch.where(scales > 0, fake(out, torch.where(scales > 0, scales, 1.0), -127, 127), out)))
    probs = torch.from_numpy(qblock.prob_scales(heads)).float()
    attn.attn_drop.register_forward_hook(lambda m, a, out: quantizer(f"{name}.probs", out, fake(out, probs, 0, 255)))
