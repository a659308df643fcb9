"""Apply ToMe to a timm VisionTransformer: each Block merges its own fixed r between attention and MLP.

The patch wraps timm's modules instead of copying their forward code: attention is timm's own
`Attention` (its `attn_mask` argument carries the +log(size) of proportional attention, and a tap
on `k_norm` records the keys that ToMe matches on); the block's residual structure (norm1, attn,
ls1, drop_path1, norm2, mlp, ls2, drop_path2) is called module by module, so LayerScale and q/k norm
are kept. At r = 0 everywhere the model computes exactly what stock timm computes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from compile.tome import bipartite_soft_matching, max_r, merge_wavg, token_counts
from runtime.errors import EdgevitError

BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")


class KeyTap(nn.Module):
    """Wraps an attention's k_norm and keeps its output (the keys [B, heads, N, head_dim]) for ToMe.

    The keys are held in a slot object, not in a module attribute, dict or list: torch.export
    treats tensors assigned to those during forward as module state.
    """

    def __init__(self, k_norm: nn.Module):
        super().__init__()
        self.k_norm = k_norm
        self.last = _Slot()

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        self.last.value = keys = self.k_norm(k)
        return keys


class _Slot:
    """Holds the latest tensor of a KeyTap."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None


class ToMeBlocks(nn.Module):
    """timm's `blocks` Sequential, run with token sizes and a fixed merge count per block."""

    def __init__(self, blocks: nn.Sequential, schedule: Sequence[int], protected: int):
        super().__init__()
        self.blocks = blocks
        self.schedule = list(schedule)
        self.protected = protected
        for block in blocks:
            if not isinstance(block.attn.k_norm, KeyTap):
                block.attn.k_norm = KeyTap(block.attn.k_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = None  # all ones until the first merge: no proportional-attention term needed
        for block, r in zip(self.blocks, self.schedule):
            log_size = None if size is None else size.log()[:, None, None, :, 0]
            x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x), attn_mask=log_size)))
            if r > 0:
                metric = block.attn.k_norm.last.value.mean(dim=1)
                if size is None:
                    size = torch.ones_like(x[..., :1])
                merge = bipartite_soft_matching(metric, r, self.protected)
                x, size = merge_wavg(merge, x, size)
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return x


def num_tokens(model: nn.Module) -> int:
    """Tokens entering the first block: patches plus prefix (class / distillation / register) tokens."""
    return model.patch_embed.num_patches + model.num_prefix_tokens


def parse_tome_r(value: str | int | Sequence[int], depth: int, tokens: int, protected: int = 1) -> list[int]:
    """A per-block merge schedule from a constant r, a comma list, or 'R:decrease'.

    - 8            -> 8 in every block
    - 8,8,6,...    -> one value per block (exactly `depth` values)
    - 16:decrease  -> linear from 2R in the first block down to 0 in the last (about R*depth tokens
                      merged in total, like a constant R, but more of them early where it saves most)
    Raises EdgevitError naming the largest valid r when a block would merge more than it can.
    """
    if isinstance(value, int):
        schedule = [value] * depth
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+)\s*:\s*decrease\s*", value)):
        top = 2 * int(m.group(1))
        schedule = [round(top * (depth - 1 - i) / max(depth - 1, 1)) for i in range(depth)]
    else:
        try:
            items = [int(v) for v in value.split(",")] if isinstance(value, str) else [int(v) for v in value]
        except ValueError:
            raise EdgevitError(f"--tome-r '{value}': expected an int, a comma list of {depth} ints, or 'R:decrease'") from None
        schedule = items * depth if len(items) == 1 else items
    if len(schedule) != depth:
        raise EdgevitError(f"--tome-r has {len(schedule)} values; the model has {depth} blocks")
    if any(r < 0 for r in schedule):
        raise EdgevitError(f"--tome-r must not be negative: {schedule}")
    counts = token_counts(schedule, tokens)
    for block, (r, n) in enumerate(zip(schedule, counts)):
        if r > max_r(n, protected):
            raise EdgevitError(
                f"--tome-r {value}: block {block} has {n} tokens and can merge at most {max_r(n, protected)}; "
                f"the largest valid constant r for this model is {largest_constant_r(depth, tokens, protected)}"
            )
    return schedule


def largest_constant_r(depth: int, tokens: int, protected: int) -> int:
    """The largest r that every block can merge when all blocks use the same r."""
    r = 0
    while all(r + 1 <= max_r(n, protected) for n in token_counts([r + 1] * depth, tokens)[:-1]):
        r += 1
    return r


def apply_tome(model: nn.Module, schedule: Sequence[int]) -> nn.Module:
    """Patch `model` (a timm VisionTransformer) in place to merge schedule[i] tokens in block i."""
    blocks = model.blocks.blocks if isinstance(model.blocks, ToMeBlocks) else model.blocks
    for i, block in enumerate(blocks):
        missing = [part for part in BLOCK_PARTS if not hasattr(block, part)]
        if missing:
            raise EdgevitError(f"ToMe supports timm's standard ViT Block; block {i} lacks {', '.join(missing)}")
    model.blocks = ToMeBlocks(blocks, schedule, protected=model.num_prefix_tokens)
    return model


def gflops(model: nn.Module, schedule: Sequence[int]) -> float:
    """Multiply-add FLOPs (x2) of one image through a patched or plain ViT with this schedule."""
    blocks = model.blocks.blocks if isinstance(model.blocks, ToMeBlocks) else model.blocks
    dim = model.embed_dim
    hidden = blocks[0].mlp.fc1.out_features
    patch_in = model.patch_embed.num_patches
    macs = patch_in * dim * 3 * model.patch_embed.patch_size[0] * model.patch_embed.patch_size[1]
    for n_in, r in zip(token_counts(list(schedule), num_tokens(model)), schedule):
        macs += n_in * dim * 3 * dim + 2 * n_in * n_in * dim + n_in * dim * dim  # qkv, attention, proj
        macs += 2 * (n_in - r) * dim * hidden  # MLP runs after the merge
    macs += dim * model.num_classes
    return 2 * macs / 1e9
