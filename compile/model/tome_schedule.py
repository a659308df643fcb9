"""ToMe schedules: how many tokens each block merges (--tome-r), checked against what each block can merge."""

from __future__ import annotations

import re
from collections.abc import Sequence

from runtime.errors import EdgevitError


def max_r(tokens: int, protected: int) -> int:
    """The largest r one block with `tokens` tokens can merge (all mergeable A tokens)."""
    return (tokens + 1) // 2 - (protected + 1) // 2


def token_counts(schedule: list[int], tokens: int) -> list[int]:
    """Tokens entering each block, then the count after the last block (len(schedule) + 1 values)."""
    counts = [tokens]
    for r in schedule:
        counts.append(counts[-1] - r)
    return counts


def parse_tome_r(value: str | int | Sequence[int], depth: int, tokens: int, protected: int = 1) -> list[int]:
    """A per-block merge schedule from a constant r, a comma list, or 'R:decrease'.

    - 8            -> 8 in every block
    - 8,8,6,...    -> one value per block (exactly `depth` values)
    - 16:decrease  -> linear from 2R in the first block down to 0 in the last (about R*depth tokens
                      merged in total, like a constant R, but more of them early where it saves most)
    Raises EdgevitError naming the largest valid r when a block would merge more than it can.
    """
    if isinstance(value, int):
        schedule = [value] * depth
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+)\s*:\s*decrease\s*", value)):
        top = 2 * int(m.group(1))
        schedule = [round(top * (depth - 1 - i) / max(depth - 1, 1)) for i in range(depth)]
    else:
        try:
            items = [int(v) for v in value.split(",")] if isinstance(value, str) else [int(v) for v in value]
        except ValueError:
            raise EdgevitError(f"--tome-r '{value}': expected an int, a comma list of {depth} ints, or 'R:decrease'") from None
        schedule = items * depth if len(items) == 1 else items
    if len(schedule) != depth:
        raise EdgevitError(f"--tome-r has {len(schedule)} values; the model has {depth} blocks")
    if any(r < 0 for r in schedule):
        raise EdgevitError(f"--tome-r must not be negative: {schedule}")
    counts = token_counts(schedule, tokens)
    for block, (r, n) in enumerate(zip(schedule, counts)):
        if r > max_r(n, protected):
            raise EdgevitError(
                f"--tome-r {value}: block {block} has {n} tokens and can merge at most {max_r(n, protected)}; "
                f"the largest valid constant r for this model is {largest_constant_r(depth, tokens, protected)}"
            )
    return schedule


def largest_constant_r(depth: int, tokens: int, protected: int) -> int:
    """The largest r that every block can merge when all blocks use the same r."""
    r = 0
    while all(r + 1 <= max_r(n, protected) for n in token_counts([r + 1] * depth, tokens)[:-1]):
        r += 1
    return r
