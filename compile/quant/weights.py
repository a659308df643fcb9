"""Symmetric int8 weights: one scale per output channel (or one per tensor for the naive baseline)."""

from __future__ import annotations

import numpy as np

from compile.quant.observers import QMAX


def quantize_weight(weight: np.ndarray, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """weight [K, N] float -> (int8 [K, N], scale [N] float32) with weight ~= int8 * scale.

    Columns that are all zero get scale 1 (their int8 values are 0 anyway), never a 0 scale.
    """
    absmax = np.abs(weight).max(axis=0) if per_channel else np.full(weight.shape[1], np.abs(weight).max())
    scale = np.where(absmax > 0, absmax / QMAX, 1.0).astype(np.float32)
    q = np.clip(np.round(weight / scale), -QMAX, QMAX).astype(np.int8)
    return q, scale
