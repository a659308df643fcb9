"""Rewrite a timm ViT into mathematically equal modules that lower to better kernels.

- Attention: timm's fused `scaled_dot_product_attention` imports as a softmax guarded by NaN masks;
  the explicit q @ k^T -> softmax -> @ v path imports as two batched matmuls and a softmax.
- Patch embedding: a Conv2d whose stride equals its kernel is a matmul over non-overlapping patches;
  written that way it runs on the GEMM schedule instead of a direct convolution.
"""

from __future__ import annotations

import torch
from torch import nn


def image_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), C*p*p], channel-major inside a patch (the conv weight's order)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


class PatchifyLinear(nn.Module):
    """Conv2d(C, D, kernel=p, stride=p) as patches [B, C*p*p, (H/p)*(W/p)] -> linear -> [B, D, H/p, W/p]."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.patch = conv.kernel_size[0]
        self.out_channels = conv.out_channels
        self.weight = nn.Parameter(conv.weight.detach().reshape(conv.out_channels, -1).t().contiguous())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.patch
        out = image_patches(x, p) @ self.weight
        if self.bias is not None:
            out = out + self.bias
        return out.transpose(1, 2).reshape(b, self.out_channels, h // p, w // p)


def is_patchify(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d) and conv.kernel_size == conv.stride and conv.padding in ((0, 0), "valid")
        and conv.groups == 1 and conv.dilation == (1, 1) and conv.kernel_size[0] == conv.kernel_size[1]
    )


def prepare_for_export(model: nn.Module) -> nn.Module:
    """Apply the rewrites in place (outputs unchanged up to float rounding) and return the model."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    embed = getattr(model, "patch_embed", None)
    if embed is not None and is_patchify(getattr(embed, "proj", None)):
        embed.proj = PatchifyLinear(embed.proj)
    return model
