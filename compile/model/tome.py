"""Token Merging (ToMe, Bolya et al. 2023) in PyTorch: the reference the compiled graphs are tested against, and
what calibration runs (compile.model.tome_patch applies it to timm). Imports nothing but torch.

Bipartite soft matching: tokens alternate into sets A and B; every A token is matched to its most similar B
token (cosine similarity of the attention keys, averaged over heads); the r best-matched A tokens are merged into
their B partners. Protected prefix tokens (class / distillation / registers) are never merged. Merging is a
size-weighted average, and `size` (how many patches a token stands for) feeds proportional attention (+log size
on the attention logits). Ties are broken as the compiled kernels break them (compile.kernels.tome_kernels): the
first best partner, and among equal best scores the lower A token first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Merge = Callable[[torch.Tensor], torch.Tensor]


def protection_mask(num_a: int, num_b: int, protected: int, device=None) -> torch.Tensor:
    """[num_a, num_b] True on every edge touching a protected prefix token.

    Prefix tokens alternate too: token 0 is A[0], token 1 is B[0], token 2 is A[1], ...
    """
    rows = (torch.arange(num_a, device=device) < (protected + 1) // 2)[:, None]
    cols = (torch.arange(num_b, device=device) < protected // 2)[None, :]
    return rows | cols


def bipartite_soft_matching(metric: torch.Tensor, r: int, protected: int = 1) -> Merge:
    """Match A tokens to B tokens on `metric` [batch, tokens, channels] by cosine similarity; the merge function."""
    if r <= 0:
        return lambda x: x
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        return match(metric[..., ::2, :] @ metric[..., 1::2, :].transpose(-1, -2), r, protected)


def match(scores: torch.Tensor, r: int, protected: int) -> Merge:
    """The merge of bipartite soft matching on scores [batch, num_a, num_b] of A against B tokens (any real or
    integer dtype). It maps x [batch, tokens, c] -> [batch, tokens - r, c], summing each merged A token into its B
    partner: the protected prefix first (in its original order), then the kept A tokens (in order), then the
    other B tokens. r must leave every protected token unmerged: r <= ceil(tokens / 2) - ceil(protected / 2)."""
    num_a, num_b = scores.shape[-2:]
    keep_a, keep_b = (protected + 1) // 2, protected // 2  # protected tokens in A and in B
    info = torch.finfo if scores.dtype.is_floating_point else torch.iinfo
    scores = scores.masked_fill(protection_mask(num_a, num_b, protected, scores.device), info(scores.dtype).min)
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True, stable=True)[..., None]
    unmerged_idx = edge_idx[..., r:, :].sort(dim=-2).values  # keep token order
    src_idx = edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    # one-hot [batch, r, num_b]: row i selects the B token that merged A token i goes into
    dst_onehot = dst_idx == torch.arange(num_b, device=scores.device)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, _, c = src.shape
        unmerged = src.gather(dim=-2, index=unmerged_idx.expand(n, num_a - r, c))
        merged = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst + dst_onehot.to(x.dtype).transpose(-1, -2) @ merged
        parts = [unmerged[..., :keep_a, :], dst[..., :keep_b, :], unmerged[..., keep_a:, :], dst[..., keep_b:, :]]
        return torch.cat(parts, dim=-2)

    return merge


def merge_wavg(merge: Merge, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge of x [batch, tokens, c] with size [batch, tokens, 1]."""
    x = merge(x * size)
    size = merge(size)
    return x / size, size
