"""Fixed-point helpers shared by the integer graph and its parameters.

Rounding everywhere is round-half-up on an arithmetic right shift:
    rshift_round(x, s) = (x + 2^(s-1)) >> s   (s >= 1)
A real multiplier m > 0 becomes a dyadic pair (mult, shift): m ~= mult / 2^shift with mult in
[2^30, 2^31), so `rshift_round(x * mult, shift)` (int64 product) rescales an int32 accumulator.
"""

from __future__ import annotations

import numpy as np

MULT_BITS = 31


def dyadic(multiplier: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mult int64, shift int64) with multiplier ~= mult * 2^-shift, mult in [2^30, 2^31).

    shift is clamped to [1, 62]; a multiplier too small to represent becomes (0, 1): the output is 0.
    """
    m = np.atleast_1d(np.asarray(multiplier, dtype=np.float64))
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ValueError("dyadic multipliers must be finite and non-negative")
    mant, exp = np.frexp(m)  # m = mant * 2^exp, mant in [0.5, 1)
    mult = np.round(mant * (1 << MULT_BITS)).astype(np.int64)
    shift = MULT_BITS - exp.astype(np.int64)
    carry = mult == (1 << MULT_BITS)  # mant rounded up to 1.0
    mult = np.where(carry, mult >> 1, mult)
    shift = np.where(carry, shift - 1, shift)
    too_small = (shift > 62) | (m == 0)
    if np.any(~too_small & (shift < 1)):
        raise ValueError("dyadic multiplier too large (>= 2^30)")
    return np.where(too_small, 0, mult), np.where(too_small, 1, shift)
