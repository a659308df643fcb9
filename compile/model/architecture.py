"""Which timm models edgevit compiles: the standard ViT structure, recognised by its parts, not by name.

Accepted: timm's `VisionTransformer` / `VisionTransformerDistilled` built of patch embedding (a
non-overlapping convolution), blocks of (norm, attention with qkv + proj, norm, MLP fc1 / act / fc2),
optional LayerScale, q/k norm, `norm_pre`, class token or none (average pooling), register tokens, any
patch size, square input size and number of classes. That covers DeiT, DeiT III, the AugReg ViTs, ViTs at
384 px, DINOv2 (with registers) and the CLIP image towers (QuickGELU included). Anything else is named
with the part that does not fit, before any heavy work.

Every precision is emitted from one description of these (compile.model.vit, compile.graph); the integer-only
and int8 graphs handle all of them but two rare head layouts: `int8_unsupported` names them.
"""

from __future__ import annotations

from torch import nn

MODEL_CLASSES = ("VisionTransformer", "VisionTransformerDistilled")
POOLING = ("token", "avg")
ACTIVATIONS = ("GELU", "QuickGELU")
FAMILIES = ("DeiT (deit_*, distilled too)", "DeiT III (deit3_*)", "ViT / AugReg (vit_*_patch{8,14,16,32}_{224,384})",
            "DINOv2 (vit_*_patch14_dinov2, *_reg4_*)", "CLIP image towers (vit_*_clip_*, QuickGELU too)",
            "global-average-pool ViTs (vit_*_gap_*)")


def is_patchify(conv: nn.Module) -> bool:
    """A Conv2d whose stride equals its square kernel, unpadded: a matmul over non-overlapping patches."""
    return (
        isinstance(conv, nn.Conv2d) and conv.kernel_size == conv.stride and conv.padding in ((0, 0), "valid")
        and conv.groups == 1 and conv.dilation == (1, 1) and conv.kernel_size[0] == conv.kernel_size[1]
    )


def _is_identity_or_layernorm(module: nn.Module) -> bool:
    return isinstance(module, (nn.Identity, nn.LayerNorm))


def unsupported_part(model: nn.Module) -> str | None:
    """What keeps `model` from being a standard ViT (a phrase for the error line), None when it is one."""
    kind = type(model).__name__
    if kind not in MODEL_CLASSES:
        return f"{kind} is not a ViT of the standard structure (edgevit compiles {' / '.join(MODEL_CLASSES)})"
    if getattr(model, "attn_pool", None) is not None:
        return "its attention-pool head"
    if model.global_pool not in POOLING:
        return f"its '{model.global_pool}' pooling (supported: {', '.join(POOLING)})"
    if getattr(model, "dynamic_img_size", False):
        return "dynamic image size"
    if not is_patchify(getattr(model.patch_embed, "proj", None)) or not isinstance(model.patch_embed.norm, nn.Identity):
        return "its patch embedding (a square, non-overlapping convolution without a norm is supported)"
    height, width = model.patch_embed.img_size
    if height != width:
        return f"its non-square input {height}x{width}"
    for name in ("norm_pre", "norm", "fc_norm"):
        if not _is_identity_or_layernorm(getattr(model, name)):
            return f"its {name} ({type(getattr(model, name)).__name__})"
    for i, block in enumerate(model.blocks):
        problem = _block_problem(block)
        if problem:
            return f"block {i}: {problem}"
    return None


def _block_problem(block: nn.Module) -> str | None:
    if type(block).__name__ != "Block":
        return f"{type(block).__name__} (edgevit compiles timm's Block)"
    attn = block.attn
    if type(attn).__name__ != "Attention" or not isinstance(getattr(attn, "qkv", None), nn.Linear):
        return f"attention {type(attn).__name__} (edgevit compiles timm's Attention with one qkv linear)"
    if not (_is_identity_or_layernorm(attn.q_norm) and _is_identity_or_layernorm(attn.k_norm)):
        return "its q/k norm"
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
        return "a norm inside attention"
    if getattr(attn, "gate", None) is not None:
        return "gated attention"
    mlp = block.mlp
    if type(mlp).__name__ != "Mlp" or type(mlp.act).__name__ not in ACTIVATIONS or not isinstance(mlp.norm, nn.Identity):
        return f"MLP {type(mlp).__name__} with {type(getattr(mlp, 'act', None)).__name__} (supported: Mlp with GELU / QuickGELU)"
    for name in ("norm1", "norm2"):
        if not isinstance(getattr(block, name), nn.LayerNorm):
            return f"its {name} ({type(getattr(block, name)).__name__})"
    return None


def int8_unsupported(model: nn.Module) -> str | None:
    """What the integer graph does not handle in a standard ViT, None when it handles the model.

    It pools one way or the other through exactly one final LayerNorm: `norm` on every row for
    class-token pooling, `fc_norm` on the mean for average pooling (timm's defaults for each)."""
    final = model.fc_norm if model.global_pool == "avg" else model.norm
    checks = [
        (model.global_pool == "avg" and isinstance(model.norm, nn.LayerNorm), "final norm before average pooling"),
        (not isinstance(final, nn.LayerNorm), "head without a final LayerNorm"),
    ]
    return next((what for failing, what in checks if failing), None)
