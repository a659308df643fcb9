"""PyTorch reference computations the tests compare compiled bundles against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.preprocess import Preprocess


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
