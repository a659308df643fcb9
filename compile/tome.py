"""Token Merging (ToMe, Bolya et al. 2023) written for static shapes and compilers.

Bipartite soft matching: tokens alternate into sets A and B; every A token is matched to its most
similar B token (cosine similarity of the attention keys, averaged over heads); the r best-matched
A tokens are merged into their B partners. Protected prefix tokens (class / distillation) are never
merged. Merging is a size-weighted average, and `size` (how many patches a token stands for) feeds
proportional attention (+log size on the attention logits).

Only ops that `torch.export` and TVM's Relax importer handle are used: strided slices, matmul,
max, argsort, gather and a one-hot matmul in place of `scatter_reduce`, so every block has a fixed
token count and the compiled graph has static shapes. Imports nothing but torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Merge = Callable[[torch.Tensor], torch.Tensor]


def protection_mask(num_a: int, num_b: int, protected: int, device=None) -> torch.Tensor:
    """[num_a, num_b] additive mask: -inf on every edge touching a protected prefix token.

    Prefix tokens alternate too: token 0 is A[0], token 1 is B[0], token 2 is A[1], ...
    """
    rows = (torch.arange(num_a, device=device) < (protected + 1) // 2)[:, None]
    cols = (torch.arange(num_b, device=device) < protected // 2)[None, :]
    return torch.zeros(num_a, num_b, device=device).masked_fill(rows | cols, -math.inf)


def bipartite_soft_matching(metric: torch.Tensor, r: int, protected: int = 1) -> Merge:
    """Match A tokens to B tokens on `metric` [batch, tokens, channels]; return the merge function.

    The merge maps x [batch, tokens, c] -> [batch, tokens - r, c] by summing each merged A token
    into its B partner: the protected prefix first (in its original order), then the kept A tokens
    (in order), then the other B tokens. With one protected token this is ToMe's own order.
    r must leave every protected token unmerged: r <= ceil(tokens / 2) - ceil(protected / 2).
    """
    if r <= 0:
        return lambda x: x
    keep_a, keep_b = (protected + 1) // 2, protected // 2  # protected tokens in A and in B
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        num_a, num_b = a.shape[-2], b.shape[-2]
        scores = a @ b.transpose(-1, -2) + protection_mask(num_a, num_b, protected, metric.device)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unmerged_idx = edge_idx[..., r:, :]
        unmerged_idx = unmerged_idx.gather(dim=-2, index=unmerged_idx.argsort(dim=-2))  # keep token order
        src_idx = edge_idx[..., :r, :]
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
        # one-hot [batch, r, num_b]: row i selects the B token that merged A token i goes into
        dst_onehot = (dst_idx == torch.arange(num_b, device=metric.device)).to(metric.dtype)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, _, c = src.shape
        unmerged = src.gather(dim=-2, index=unmerged_idx.expand(n, num_a - r, c))
        merged = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst + dst_onehot.to(x.dtype).transpose(-1, -2) @ merged
        if keep_b == 0:
            return torch.cat([unmerged, dst], dim=-2)
        parts = [unmerged[..., :keep_a, :], dst[..., :keep_b, :], unmerged[..., keep_a:, :], dst[..., keep_b:, :]]
        return torch.cat(parts, dim=-2)

    return merge


def merge_wavg(merge: Merge, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge of x [batch, tokens, c] with size [batch, tokens, 1]."""
    x = merge(x * size)
    size = merge(size)
    return x / size, size


def max_r(tokens: int, protected: int) -> int:
    """The largest r one block with `tokens` tokens can merge (all mergeable A tokens)."""
    return (tokens + 1) // 2 - (protected + 1) // 2


def token_counts(schedule: list[int], tokens: int) -> list[int]:
    """Tokens entering each block, then the count after the last block (len(schedule) + 1 values)."""
    counts = [tokens]
    for r in schedule:
        counts.append(counts[-1] - r)
    return counts
