"""Apply ToMe to a timm VisionTransformer: each Block merges its own fixed r between attention and MLP.

The patch wraps timm's modules instead of copying their forward code: attention is timm's own
`Attention` (its `attn_mask` argument carries the +log(size) of proportional attention, and a hook
on `k_norm` records the keys that ToMe matches on); the block's residual structure (norm1, attn,
ls1, drop_path1, norm2, mlp, ls2, drop_path2) is called module by module, so LayerScale and q/k norm
are kept. At r = 0 everywhere the model computes exactly what stock timm computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compile.model.tome import bipartite_soft_matching, merge_wavg
from runtime.errors import EdgevitError

BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")


class ToMeBlocks(nn.Module):
    """timm's `blocks` Sequential, run with token sizes and a fixed merge count per block."""

    def __init__(self, blocks: nn.Sequential, schedule: Sequence[int], protected: int):
        super().__init__()
        self.blocks = blocks
        self.schedule = list(schedule)
        self.protected = protected
        self.keys: dict[int, torch.Tensor] = {}  # block -> its keys [B, heads, N, head_dim], from a hook on k_norm
        for i, block in enumerate(blocks):
            block.attn.k_norm.register_forward_hook(lambda _m, _a, keys, i=i: self.keys.__setitem__(i, keys))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = None  # all ones until the first merge: no proportional-attention term needed
        for i, (block, r) in enumerate(zip(self.blocks, self.schedule)):
            log_size = None if size is None else size.log()[:, None, None, :, 0]
            x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x), attn_mask=log_size)))
            if r > 0:
                metric = self.keys[i].mean(dim=1)
                if size is None:
                    size = torch.ones_like(x[..., :1])
                merge = bipartite_soft_matching(metric, r, self.protected)
                x, size = merge_wavg(merge, x, size)
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return x


def num_tokens(model: nn.Module) -> int:
    """Tokens entering the first block: patches plus prefix (class / distillation / register) tokens."""
    return model.patch_embed.num_patches + model.num_prefix_tokens


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """A timm ViT's transformer blocks, inside ToMeBlocks when `apply_tome` patched it."""
    return model.blocks.blocks if isinstance(model.blocks, ToMeBlocks) else model.blocks


def apply_tome(model: nn.Module, schedule: Sequence[int]) -> nn.Module:
    """Patch `model` (a timm VisionTransformer) in place to merge schedule[i] tokens in block i."""
    blocks = transformer_blocks(model)
    for i, block in enumerate(blocks):
        missing = [part for part in BLOCK_PARTS if not hasattr(block, part)]
        if missing:
            raise EdgevitError(f"ToMe supports timm's standard ViT Block; block {i} lacks {', '.join(missing)}")
    model.blocks = ToMeBlocks(blocks, schedule, protected=model.num_prefix_tokens)
    return model
