"""Reference computations the tests compare compiled bundles and the native core against (PyTorch, Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.manifest import InputSpec
from runtime.preprocess import Preprocess


def pillow_preprocess(spec: InputSpec, path: Path) -> np.ndarray:
    """timm's eval transform of one image file with Pillow and numpy, [3, H, W] of spec.dtype: convert("RGB"), resize
    the short side to spec.resize, center crop (Python's round), then raw uint8 or (p - mean * 255) / (std * 255) in
    float32 (numpy's arithmetic: multiply by the reciprocal)."""
    from PIL import Image

    size = spec.shape[-1]
    with Image.open(path) as img:
        img = img.convert("RGB")
    width, height = img.size
    scale = spec.resize / min(width, height)
    new_size = (spec.resize, int(height * scale)) if width <= height else (int(width * scale), spec.resize)
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[spec.interpolation]
    img = img.resize(new_size, resample)
    left, top = int(round((new_size[0] - size) / 2)), int(round((new_size[1] - size) / 2))
    pixels = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1)
    if spec.dtype == "uint8":
        return np.ascontiguousarray(pixels)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
    inv_std = (1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0)).reshape(3, 1, 1)
    return (pixels.astype(np.float32) - mean) * inv_std


def load_batch(preprocess: Preprocess, images: Path, names: list[str]) -> np.ndarray:
    """Preprocessed images [N, 3, H, W] float32 (the runtime's transform, equal to timm's)."""
    return np.stack([preprocess.load(images / name) for name in names])


def torch_logits(model, batch: np.ndarray, chunk: int = 50) -> np.ndarray:
    """Logits of a PyTorch model on a batch, computed in chunks."""
    import torch

    outs = []
    with torch.inference_mode():
        for start in range(0, len(batch), chunk):
            outs.append(model(torch.from_numpy(batch[start : start + chunk])).numpy())
    return np.concatenate(outs)


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among the k largest logits."""
    best = np.argsort(-logits, axis=1)[:, :k]
    return int((best == labels[:, None]).any(axis=1).sum())


def timm_top1(images: Path, n_images: int, model_name: str = "deit_tiny_patch16_224") -> float:
    """Top-1 of the timm model itself (stored weights) on the first `n_images` evaluation images."""
    from compile.data import evaluation_rows
    from compile.model.models import load_model
    from results.peers.inputs import model_preprocess

    rows = evaluation_rows(n_images)
    batch = load_batch(model_preprocess(model_name), images, [name for name, _ in rows])
    logits = torch_logits(load_model(model_name), batch)
    return topk_hits(logits, np.array([label for _, label in rows]), 1) / len(rows)
