"""GPTQ-style int4 rounding: row by row of K, each rounding error compensated on the rows not yet rounded.

For a GEMM y = x @ W with calibration inputs X (H = X^T X, [K, K]), rounding row k of W to q_k
moves the output by X[:, k] (q_k - w_k); the least-squares correction of the remaining rows F is
    W[F] -= H_F^-1[F, k] / H_F^-1[k, k] * (w_k - q_k)         (H_F: H restricted to rows k and F)
(Optimal Brain Surgeon, as GPTQ applies it). GPTQ gets every H_F^-1 row at once from the upper
Cholesky factor U of H^-1 (U[k, k:] = H_F^-1[k, :] / sqrt(H_F^-1[k, k])) and applies the updates of
a block of rows lazily. Scales are those of round-to-nearest, computed once from the original
weight (static groups), so act-order (rows by decreasing H[k, k]) keeps each row's group.
GPTQ rounds each row once, against rows not yet rounded; coordinate descent then revisits every row
with all the others rounded (QuantEase's refinement, `descend`). Everything in float64.
"""

from __future__ import annotations

import numpy as np
import torch

from compile.quant.int4 import INT4_MAX, Int4Weight, grid_scales, int4_scales, int4_weight, round_int4, row_scales

DAMPING = 0.01  # added to H's diagonal, relative to its mean: keeps H invertible with few or dead inputs
BLOCK_ROWS = 128  # rows whose updates are applied lazily together (the result does not depend on it)
DESCENT_PASSES = 4  # coordinate-descent sweeps after GPTQ: DeiT-tiny's GEMM objectives ~6% lower (median), most in 2


def quantize_gptq(weight: np.ndarray, hessian: np.ndarray, group: int, act_order: bool = True,
                  damping: float = DAMPING, block_rows: int = BLOCK_ROWS, passes: int = DESCENT_PASSES) -> Int4Weight:
    """int4 of a float weight [K, N] that minimizes tr(dW^T H dW), H [K, K] the inputs' X^T X: GPTQ's greedy pass,
    then `passes` sweeps of coordinate descent."""
    column, multiplier = int4_scales(weight, group)
    scales = row_scales(grid_scales(column, multiplier), group, weight.shape[0])
    w, h = dampened(weight, hessian, damping)
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(len(w))
    codes = np.empty(weight.shape, dtype=np.int8)
    codes[order] = _round_in_order(w[order], h[np.ix_(order, order)], scales[order], block_rows)
    return int4_weight(descend(weight, hessian, scales, codes, passes, block_rows), column, multiplier, group)


def descend(weight: np.ndarray, hessian: np.ndarray, scales: np.ndarray, codes: np.ndarray, passes: int,
            block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """Codes [K, N] that lower tr(E^T H E), E = W - scales * codes, row by row, the other rows fixed (coordinate
    descent, as QuantEase).

    Along row k of column n the objective is a parabola in the code, vertex q + (H E)[k, n] / (H[k, k] s[k, n]); its
    best code in [-7, 7] is the rounded vertex, clipped. So no step raises the objective, and after a sweep without
    a change no single code can move to lower it. H is undampened: this is the real output error. As in GPTQ, a
    block of rows updates H E within itself at once and the other rows with one product at its end."""
    w, h = dampened(weight, hessian, 0.0)
    codes = codes.astype(np.int64)
    he = h @ (w - scales * codes)
    diagonal = np.diag(h)
    for _ in range(passes):
        changed = False
        for start in range(0, len(w), block_rows):
            stop = min(start + block_rows, len(w))
            moves = np.zeros((stop - start, w.shape[1]))  # the error change of the block's rows
            for k in range(start, stop):
                best = np.clip(np.round(codes[k] + he[k] / (diagonal[k] * scales[k])), -INT4_MAX, INT4_MAX)
                moved = np.flatnonzero(best != codes[k])
                if moved.size:
                    moves[k - start, moved] = -scales[k, moved] * (best[moved] - codes[k, moved])
                    he[start:stop, moved] += np.outer(h[start:stop, k], moves[k - start, moved])
                    codes[k, moved] = best[moved]
            if moves.any():
                changed = True
                he[:start] += h[:start, start:stop] @ moves
                he[stop:] += h[stop:, start:stop] @ moves
        if not changed:
            break
    return codes.astype(np.int8)


def dampened(weight: np.ndarray, hessian: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray]:
    """(float64 weight, float64 H + damping * mean(diag) * I); inputs that were always 0 (H[k, k] = 0) get
    H[k, k] = 1 and a zero weight row: nothing reads them, so their rounding error must not spread."""
    w = weight.astype(np.float64).copy()
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[dead] = 0.0
    h[np.diag_indices_from(h)] += damping * np.mean(np.diag(h))
    return w, h


def _round_in_order(w: np.ndarray, h: np.ndarray, scales: np.ndarray, block_rows: int) -> np.ndarray:
    """Codes [K, N] of rows rounded in their order (row 0 first), each error pushed onto the later rows."""
    factor = torch.linalg.cholesky(torch.from_numpy(h))  # torch's LAPACK: numpy's is 5-10x slower on these machines
    upper = torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True).numpy()  # H^-1 = U^T U
    codes = np.empty(w.shape, dtype=np.int8)
    for start in range(0, len(w), block_rows):
        stop = min(start + block_rows, len(w))
        errors = np.empty((stop - start, w.shape[1]))
        for k in range(start, stop):
            codes[k] = round_int4(w[k], scales[k])
            errors[k - start] = (w[k] - codes[k] * scales[k]) / upper[k, k]
            w[k + 1:stop] -= np.outer(upper[k, k + 1:stop], errors[k - start])
        w[stop:] -= upper[start:stop, stop:].T @ errors
    return codes
