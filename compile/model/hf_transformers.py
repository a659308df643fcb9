"""Hugging Face `transformers` ViT / DeiT image-classification folders as timm checkpoints, by key mapping.

A folder holds config.json (`model_type` vit or deit, hidden_size, num_hidden_layers, ...), id2label,
model.safetensors or pytorch_model.bin, and maybe preprocessor_config.json. The weights keep the names
transformers writes to disk (`vit.encoder.layer.<i>.attention.attention.query.weight`, ...); they map onto
timm's VisionTransformer with query / key / value concatenated into one qkv, and the structure is timm's
registered model of that size (`vit_base_patch16_224`, `deit_tiny_distilled_patch16_224`) or, for other
sizes, its base model with the sizes as create_model arguments. Plain tensors only: transformers is
not imported (it is a test dependency, for the test that compares logits with it).

DeiT's distilled models (`DeiTForImageClassificationWithTeacher`) have class and distillation tokens and
two heads whose logits are averaged at inference, as timm's VisionTransformerDistilled does.
`DeiTForImageClassification` reads the class token only: its head becomes timm's head at twice the
weight beside a zero distillation head, which is the same function (halving and doubling are exact).
A pooler (ViTModel's dense + tanh) is no part of a classifier and is left out.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from runtime.errors import EdgevitError

SIZES = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large",
         (1280, 32, 16): "huge"}  # (hidden_size, num_hidden_layers, num_attention_heads) -> timm's size name
ACTIVATIONS = {"gelu": None, "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
LAYER_PARTS = {"attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
               "layernorm_before": "norm1", "layernorm_after": "norm2"}
TOP_LEVEL = {
    "embeddings.cls_token": "cls_token", "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed", "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias", "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias", "cls_classifier.weight": "head.weight", "cls_classifier.bias": "head.bias",
    "distillation_classifier.weight": "head_dist.weight", "distillation_classifier.bias": "head_dist.bias",
}
# What transformers' image processors do by default: ViT resizes to the input size (mean / std 0.5,
# bilinear); DeiT resizes to 256 and center-crops 224 (ImageNet mean / std, bicubic).
DEFAULT_PREPROCESSING = {
    "vit": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 1.0, "interpolation": "bilinear"},
    "deit": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 224 / 256,
             "interpolation": "bicubic"},
}
PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def timm_structure(config: dict, where: str) -> tuple[str, dict]:
    """(timm model name, create_model arguments) of a transformers ViT / DeiT config."""
    kind = config["model_type"]
    try:
        dim, depth, heads, hidden = (int(config[key]) for key in
                                     ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"))
        patch, image = int(config.get("patch_size", 16)), int(config.get("image_size", 224))
    except (KeyError, TypeError, ValueError) as err:
        raise EdgevitError(f"weights folder {where}: config.json lacks a usable {err} for a {kind} model") from None
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise EdgevitError(f"weights folder {where}: hidden_act '{act}' is not supported ({', '.join(ACTIVATIONS)})")
    from torch import nn

    args = {"qkv_bias": bool(config.get("qkv_bias", True)),
            "norm_layer": functools.partial(nn.LayerNorm, eps=float(config.get("layer_norm_eps", 1e-12)))}
    if ACTIVATIONS[act]:
        args["act_layer"] = ACTIVATIONS[act]
    size = SIZES.get((dim, depth, heads))
    family = "deit_{}_distilled_patch{}_{}" if kind == "deit" else "vit_{}_patch{}_{}"
    from compile.model.timm_import import import_timm

    name = family.format(size, patch, image) if size else None
    if name is None or not import_timm().is_model(name) or hidden != 4 * dim:
        name = family.format("base", 16, 224)
        args.update(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=hidden / dim, patch_size=patch)
    return name, args


def timm_state_dict(state: dict, kind: str) -> dict:
    """transformers' on-disk names -> timm's; names it does not know are kept (and reported by the load)."""
    import torch

    prefix = f"{kind}."
    out, qkv = {}, {}
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        parts = name.split(".")
        if name.startswith("pooler."):
            continue
        if name.startswith("encoder.layer.") and len(parts) >= 5:
            block, rest = parts[2], ".".join(parts[3:])
            if parts[3:5] == ["attention", "attention"] and len(parts) == 7:  # query / key / value . weight / bias
                qkv.setdefault((block, parts[-1]), {})[parts[5]] = value
                continue
            layer = next((timm for hf, timm in LAYER_PARTS.items() if rest.startswith(hf + ".")), None)
            if layer is not None:
                out[f"blocks.{block}.{layer}.{parts[-1]}"] = value
                continue
        out[TOP_LEVEL.get(name, name)] = value
    for (block, tensor), parts in qkv.items():  # tensor: weight | bias
        if set(parts) == {"query", "key", "value"}:
            out[f"blocks.{block}.attn.qkv.{tensor}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        else:
            out.update({f"blocks.{block}.attn.{p}.{tensor}": v for p, v in parts.items()})  # reported as unexpected
    if "classifier.weight" in out:  # DeiTForImageClassification: class token only (see the module docstring)
        for part in ("weight", "bias"):
            head = out.pop(f"classifier.{part}")
            out[f"head.{part}"] = head * 2 if "dist_token" in out else head
            if "dist_token" in out:
                out[f"head_dist.{part}"] = torch.zeros_like(head)
    return out



def preprocessing(folder: Path, config: dict) -> dict:
    """ModelSpec preprocessing fields: preprocessor_config.json where present, else transformers' defaults."""
    kind = config["model_type"]
    values = {"image_size": int(config.get("image_size", 224)), **DEFAULT_PREPROCESSING[kind]}
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return values
    try:
        proc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgevitError(f"weights folder {folder}: preprocessor_config.json is not JSON ({err})") from None
    for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
        if proc.get(theirs) is not None:
            values[ours] = tuple(float(v) for v in proc[theirs])
    if proc.get("resample") in PIL_RESAMPLE:
        values["interpolation"] = PIL_RESAMPLE[proc["resample"]]
    size, crop = proc.get("size"), proc.get("crop_size")
    resize = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
    crop = crop.get("height") if isinstance(crop, dict) else crop
    if proc.get("do_center_crop") and resize and crop:
        values["crop_pct"] = int(crop) / int(resize)
    elif resize:
        values["crop_pct"] = 1.0
    return values


def label_names(config: dict) -> list[str] | None:
    """id2label as a list (by class index), None without one."""
    id2label = config.get("id2label")
    if not id2label:
        return None
    return [id2label[key] for key in sorted(id2label, key=int)]
