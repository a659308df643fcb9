"""The ViT as the graph builder reads it: one description of the model, in float32, without calibration.

Read once from a timm model of the standard structure (compile.model.architecture); every precision is
emitted from it (compile.graph), quantization attaches its parameters per layer by name (compile.quant).
Batch 1: token rows are the prefix tokens (class, registers, distillation), then the patches.

- `patch` takes normalized pixel patches [patches, 3 * p * p] in the conv weight's (channel, row, column)
  order; `prefix` [P, C] are the prefix tokens with whatever position embedding timm gives them and `pos`
  [patches, C] what is added to each patch row (timm's own `_pos_embed` makes both: DeiT III, DINOv2).
- LayerScale is folded into proj / fc2: gamma * (x @ W + b) = x @ (W * gamma) + b * gamma.
- `final_norm` is timm's `norm` (on every row, before pooling) or its `fc_norm` (on the pooled rows), at
  most one of them; `norm_rows` says which. For token pooling the two are the same function.
- A features model (`--output features`) has identity heads: the head reads the pooled, normed rows (the
  distilled model's two heads average its two tokens, as timm's pre-logits do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Linear:
    """y = x @ weight + bias; weight float32 [K, N], bias float32 [N]; named as the layer table names it."""

    name: str
    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class LayerNorm:
    gamma: np.ndarray  # float32 [C]
    beta: np.ndarray  # float32 [C]
    eps: float


@dataclass(frozen=True)
class Block:
    """One transformer block: x += proj(attention(qkv(ln1(x)))); ToMe merges tome_r tokens; x += fc2(act(fc1(ln2(x))))."""

    index: int
    ln1: LayerNorm
    qkv: Linear  # [C, 3C]: q, k, v columns, each heads x head_dim
    proj: Linear
    ln2: LayerNorm
    fc1: Linear
    fc2: Linear
    activation: str = "gelu"  # or "quick_gelu": x * sigmoid(1.702 x) (OpenAI CLIP)
    q_norm: LayerNorm | None = None  # timm's qk_norm: LayerNorms over each head's q and k
    k_norm: LayerNorm | None = None
    tome_r: int = 0  # tokens ToMe merges after attention

    @property
    def attention(self) -> str:
        """The layer table's name of the block's q @ k^T and p @ v matmuls."""
        return f"blocks.{self.index}.attention"

    def linears(self) -> tuple[Linear, Linear, Linear, Linear]:
        return self.qkv, self.proj, self.fc1, self.fc2


@dataclass(frozen=True)
class ViT:
    """A standard ViT (see the module docstring); main(pixels [1, 3, H, W]) -> outputs [1, N]."""

    image_size: int
    patch_size: int
    num_heads: int
    patch: Linear
    prefix: np.ndarray  # float32 [P, C]
    pos: np.ndarray  # float32 [patches, C]
    blocks: tuple[Block, ...]
    heads: tuple[Linear, ...]  # token pooling: head i reads prefix token i; outputs are their mean
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the normalization of [0, 1] pixels the patch embedding expects
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    norm_pre: LayerNorm | None = None  # on the embedded tokens before the blocks (CLIP)
    final_norm: LayerNorm | None = None
    norm_rows: bool = True  # final_norm on every row before pooling (timm's norm), else on the pooled rows (fc_norm)
    pool: str = "token"  # or "avg": the mean of the patch rows
    output: str = "logits"  # or "features": identity heads, the pooled pre-logits embedding

    @property
    def num_prefix(self) -> int:
        return self.prefix.shape[0]

    @property
    def tokens(self) -> int:
        """Tokens entering the first block."""
        return self.num_prefix + self.pos.shape[0]

    def linears(self) -> list[Linear]:
        """Every token-wise GEMM layer, in the order they run."""
        return [self.patch, *(linear for block in self.blocks for linear in block.linears()), *self.heads]

    def gflops(self) -> float:
        """Multiply-add FLOPs (x2) of one image at this ToMe schedule (the heads of a logits model count once)."""
        dim, hidden = self.patch.weight.shape[1], self.blocks[0].fc1.weight.shape[1]
        macs = self.pos.shape[0] * self.patch.weight.size
        tokens = self.tokens
        for block in self.blocks:
            macs += tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim  # qkv, attention, proj
            tokens -= block.tome_r
            macs += 2 * tokens * dim * hidden  # the MLP runs after the merge
        return 2 * (macs + (self.heads[0].weight.size if self.output == "logits" else 0)) / 1e9

    def layer_names(self) -> list[str]:
        """Every GEMM layer the layer table gives a format: the linears and each block's attention matmuls."""
        return [linear.name for linear in self.linears()] + [block.attention for block in self.blocks]


def _np(tensor) -> np.ndarray:
    return tensor.detach().float().numpy().astype(np.float32)


def _layer_norm(module) -> LayerNorm | None:
    """The LayerNorm of a timm norm, None for an nn.Identity (the architecture check allows only these)."""
    return LayerNorm(_np(module.weight), _np(module.bias), float(module.eps)) if hasattr(module, "weight") else None


def _linear(name: str, module, layer_scale=None) -> Linear:
    """An nn.Linear as [in, out], with a LayerScale's gamma folded into its output columns."""
    weight = _np(module.weight).T.copy()
    bias = _np(module.bias) if module.bias is not None else np.zeros(weight.shape[1], np.float32)
    gamma = getattr(layer_scale, "gamma", None)
    if gamma is not None:
        weight, bias = weight * _np(gamma), bias * _np(gamma)
    return Linear(name, weight.astype(np.float32), bias.astype(np.float32))


def _head(name: str, module, dim: int) -> Linear:
    """A classifier head; the identity for a head removed by --output features."""
    if not hasattr(module, "weight"):
        return Linear(name, np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32))
    return _linear(name, module)


def _patch(model) -> Linear:
    """The patch embedding, a non-overlapping convolution, as a linear over patches [3 * p * p, C]."""
    conv = model.patch_embed.proj
    weight = _np(conv.weight)
    bias = _np(conv.bias) if conv.bias is not None else np.zeros(weight.shape[0], np.float32)
    return Linear("patch_embed", weight.reshape(weight.shape[0], -1).T.copy(), bias)


def _embedding_rows(model) -> tuple[np.ndarray, np.ndarray]:
    """(prefix rows [P, C], what is added to each patch row [patches, C]) as timm's `_pos_embed` makes them: it
    is affine in the patch tokens, so zero patches give the prefix tokens and each patch's position embedding."""
    import torch

    with torch.no_grad():
        rows = _np(model._pos_embed(torch.zeros(1, model.patch_embed.num_patches, model.embed_dim))[0])
    return rows[: model.num_prefix_tokens].copy(), rows[model.num_prefix_tokens:].copy()


def _block(index: int, block, tome_r: int) -> Block:
    attn, mlp = block.attn, block.mlp
    return Block(index=index, ln1=_layer_norm(block.norm1), qkv=_linear(f"blocks.{index}.qkv", attn.qkv),
                 proj=_linear(f"blocks.{index}.proj", attn.proj, block.ls1), ln2=_layer_norm(block.norm2),
                 fc1=_linear(f"blocks.{index}.fc1", mlp.fc1), fc2=_linear(f"blocks.{index}.fc2", mlp.fc2, block.ls2),
                 activation="quick_gelu" if type(mlp.act).__name__ == "QuickGELU" else "gelu",
                 q_norm=_layer_norm(attn.q_norm), k_norm=_layer_norm(attn.k_norm), tome_r=tome_r)


def describe(model, schedule: list[int], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> ViT:
    """The description of a (float, unpatched) timm ViT with a ToMe schedule (tokens merged per block);
    mean / std: the input normalization (integer graphs fold it into the patch embedding)."""
    heads = [model.head] + ([model.head_dist] if getattr(model, "head_dist", None) is not None else [])
    prefix, pos = _embedding_rows(model)
    norm, fc_norm = _layer_norm(model.norm), _layer_norm(model.fc_norm)
    return ViT(
        image_size=model.patch_embed.img_size[0], patch_size=model.patch_embed.patch_size[0],
        num_heads=model.blocks[0].attn.num_heads, patch=_patch(model), prefix=prefix, pos=pos,
        blocks=tuple(_block(i, block, r) for i, (block, r) in enumerate(zip(model.blocks, schedule))),
        heads=tuple(_head(name, m, model.embed_dim) for name, m in zip(("head", "head_dist"), heads)),
        mean=tuple(mean), std=tuple(std), norm_pre=_layer_norm(model.norm_pre), final_norm=norm or fc_norm,
        norm_rows=norm is not None, pool=model.global_pool, output="logits" if model.num_classes else "features",
    )
