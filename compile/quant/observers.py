"""Observers: the clipping range of an activation from its calibration histogram of |x|.

A histogram [..., bins] over [0, absmax] (fixed after a first min-max pass) summarizes millions of
values; the leading axes are channels (per-channel scales) or absent (per tensor). Every observer
reads the same summary:
- minmax: absmax itself (no clipping);
- percentile: the |x| below which `percentile`% of the values lie;
- mse: the clip value minimising the expected squared error of round-to-nearest int8 quantization
  (rounding noise step^2 / 12 inside the range, squared distance to the clip value outside).
"""

from __future__ import annotations

import numpy as np

QMAX = 127
PERCENTILE = 99.99
MSE_CANDIDATES = 64  # clip values tried, from 20% to 100% of absmax


def clip_minmax(hist: np.ndarray, absmax: np.ndarray) -> np.ndarray:
    return np.asarray(absmax, dtype=np.float64)


def clip_percentile(hist: np.ndarray, absmax: np.ndarray, percentile: float = PERCENTILE) -> np.ndarray:
    """Upper edge of the first bin where the cumulative share reaches `percentile`."""
    bins = hist.shape[-1]
    total = np.maximum(hist.sum(axis=-1, keepdims=True), 1e-30)
    index = np.argmax(np.cumsum(hist, axis=-1) / total >= percentile / 100.0, axis=-1)
    return np.asarray(absmax, dtype=np.float64) * (index + 1) / bins


def clip_mse(hist: np.ndarray, absmax: np.ndarray, candidates: int = MSE_CANDIDATES) -> np.ndarray:
    """The clip value with the least expected quantization MSE, per histogram row."""
    absmax = np.asarray(absmax, dtype=np.float64)
    bins = hist.shape[-1]
    fractions = np.linspace(0.2, 1.0, candidates)
    centers = (np.arange(bins) + 0.5) / bins  # in units of absmax
    # everything in units of absmax: error(fraction f) = sum hist * (clip part + rounding part)
    inside = centers[None, :] <= fractions[:, None]  # [cand, bins]
    outside_error = np.where(inside, 0.0, (centers[None, :] - fractions[:, None]) ** 2)
    rounding = np.where(inside, ((fractions / QMAX) ** 2 / 12.0)[:, None], 0.0)
    error = hist.astype(np.float64) @ (outside_error + rounding).T  # [..., cand]
    return absmax * fractions[np.argmin(error, axis=-1)]


OBSERVER_FUNCTIONS = {"minmax": clip_minmax, "percentile": clip_percentile, "mse": clip_mse}


def activation_scale(hist: np.ndarray, absmax, observer: str, qmax: int = QMAX) -> np.ndarray | float:
    """Symmetric scale(s): the real value of one integer step. 0 marks a degenerate range (an activation
    that was exactly 0 on every calibration image); callers pick a usable scale for those."""
    clip = OBSERVER_FUNCTIONS[observer](hist, absmax)
    scale = np.where(np.asarray(absmax) > 0, clip / qmax, 0.0)
    return float(scale) if np.ndim(scale) == 0 else scale.astype(np.float32)
