"""Gram: X^T X of a GEMM's calibration inputs, the Hessian GPTQ rounds against.

Calibration adds every row a GEMM reads (torch, [rows, K]). The sums of the rows are kept
too, so the Gram of shifted inputs (the patch embedding reads pixels, x - offset) follows exactly,
and the row count, so the weights can be re-expressed in any per-row scaling of their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Gram:
    """Accumulated sum of x^T x [K, K], sum of x [K] and the number of rows (float64)."""

    xtx: np.ndarray
    total: np.ndarray
    rows: int = 0

    @classmethod
    def empty(cls, channels: int) -> Gram:
        return cls(np.zeros((channels, channels)), np.zeros(channels))

    def add(self, x: torch.Tensor) -> None:
        """Accumulate rows [n, K] (one batch's product in float32, 2-4x faster: ~1e-6 relative, far below the
        damping GPTQ adds; the sum over batches in float64)."""
        x = x.float()
        self.xtx += (x.T @ x).double().numpy()
        self.total += x.sum(dim=0, dtype=torch.float64).numpy()
        self.rows += x.shape[0]

    def shifted(self, offset: np.ndarray) -> Gram:
        """The Gram of x - offset: sum (x - o)^T (x - o) = X^T X - o^T s - s^T o + n o^T o."""
        o = np.asarray(offset, dtype=np.float64)
        xtx = self.xtx - np.outer(o, self.total) - np.outer(self.total, o) + self.rows * np.outer(o, o)
        return Gram(xtx, self.total - self.rows * o, self.rows)

    def permuted(self, order: np.ndarray) -> Gram:
        """The Gram of x[:, order]."""
        return Gram(self.xtx[np.ix_(order, order)], self.total[order], self.rows)

    def scaled(self, factor: np.ndarray) -> np.ndarray:
        """X^T X of x * factor (per input channel): D X^T X D."""
        return self.xtx * np.outer(factor, factor)
