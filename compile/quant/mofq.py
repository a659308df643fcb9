"""--quant mixed: a format per GEMM (MoFQ-style), the cheapest that meets a budget.

The costs: per layer and format, the weight bytes (compile.quant.formats) and the squared first-order
moves of each held-out image's top-1 margin (compile.quant.accuracy_proxy). The layers are the GEMMs
and each block's attention matmuls, whose formats are int8 or float32 (ATTENTION_CHOICES; no weights,
so no bytes either way). Treating the layers'
moves as independent, image i flips with probability Phi(-m_i / sigma_i), sigma_i^2 = base_i + sum
over layers of delta_{l,f_l,i}^2; the estimated drop in top-1 points is 100 * (sum of Phi over the
images the float model gets right) / images. Wrong images that a perturbation would put right are
not counted: losses minus gains is far noisier on 64 images than the losses alone (on 256
evaluation images, DeiT-tiny W4A8: 7.8 losses estimated, 8 measured, beside 5 gains), so the
estimate is an upper one, as a budget should be.

- --max-drop D: the smallest model whose estimate is <= D. A 0/1 knapsack over layers (size as cost,
  the mean squared move over the images a flip costs as weight, discretized upwards) is solved for a range of move budgets; the
  smallest of its answers whose estimate meets D is kept, as is the smallest of --size-mb's answers for
  size budgets bisected below it (the two searches miss different optima), then layers move to smaller
  formats one at a time while the estimate allows; last, attention matmuls the size left in float32 move to int8 (their
  faster kernel), the least noisy first, while the estimate allows.
- --size-mb MB: the smallest estimate within MB (parameters, every float32 one outside the GEMMs
  included): the same knapsack with the roles swapped, then single-layer moves that lower the estimate.
The answer is the layer table (compile.quant.formats.LayerFormats) the graph emits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from compile.model.vit import ViT
from compile.quant.config import QuantConfig
from compile.quant.formats import FLOAT32, INT8, LayerFormats, chosen_formats, weight_bytes
from compile.quant.scales import QuantizedViT
from runtime.errors import EdgevitError

RESOLUTION = 2048  # knapsack capacity steps
BUDGET_STEPS = 48  # move budgets tried for --max-drop
BISECT_STEPS = 12  # --max-drop: size budgets bisected, each answered as --size-mb is
ATTENTION_CHOICES = (INT8, FLOAT32)  # the formats of a block's attention matmuls, the faster first


@dataclass(frozen=True)
class FormatCosts:
    """What choosing format f for layer l costs: bytes [L, F] and squared margin moves delta2 [L, F, I]."""

    layers: tuple[str, ...]
    formats: tuple[str, ...]
    bytes: np.ndarray  # [L, F]
    delta2: np.ndarray  # [L, F, I]
    margin: np.ndarray  # [I] > 0
    correct: np.ndarray  # bool [I]
    base: np.ndarray  # [I]: moves no choice changes
    other_bytes: int = 0  # parameters outside the GEMM weights
    allowed: np.ndarray | None = None  # bool [L, F]: the formats layer l may take (None: all)

    @property
    def mask(self) -> np.ndarray:
        return np.ones(self.bytes.shape, dtype=bool) if self.allowed is None else self.allowed

    def masked(self, values: np.ndarray) -> np.ndarray:
        """[L, F] `values` with a format a layer may not take at infinity."""
        return np.where(self.mask, values, np.inf)

    def size_bytes(self, choice: np.ndarray) -> int:
        return int(self.bytes[np.arange(len(choice)), choice].sum()) + self.other_bytes

    def drop_points(self, choice: np.ndarray) -> float:
        """The estimated top-1 drop of `choice` (format index per layer), in points."""
        variance = self.base + self.delta2[np.arange(len(choice)), choice].sum(axis=0)
        z = self.margin / np.sqrt(np.maximum(variance, 1e-300))
        flips = torch.special.ndtr(torch.from_numpy(-z)).numpy()
        return float(100.0 * np.where(self.correct, flips, 0.0).mean())

    def noise(self) -> np.ndarray:
        """[L, F]: the mean squared margin move over the images a flip costs, the knapsack's additive stand-in for
        the drop."""
        return (self.delta2 * self.correct).mean(axis=2)

    def everywhere(self, fmt: str) -> np.ndarray:
        """`fmt` in every layer that may take it; the others (attention matmuls) in int8, else float32."""
        fallback = [f for f in (fmt, *ATTENTION_CHOICES) if f in self.formats]
        return np.array([next(self.formats.index(f) for f in fallback if row[self.formats.index(f)])
                         for row in self.mask])


def choose(costs: FormatCosts, max_drop: float | None = None, size_mb: float | None = None) -> np.ndarray:
    """The format index per layer under exactly one budget; an EdgevitError when none meets it."""
    if size_mb is not None:
        return _least_drop_within(costs, size_mb)
    return _smallest_within_drop(costs, max_drop)


def _smallest_within_drop(costs: FormatCosts, max_drop: float) -> np.ndarray:
    noise = costs.masked(costs.noise())
    least = _argmin_then(noise, costs.bytes)
    if costs.drop_points(least) > max_drop:
        names = ", ".join(sorted({costs.formats[f] for f in least}))
        raise EdgevitError(f"no choice of formats meets --max-drop {max_drop}: the most accurate ({names} layers) is "
                           f"estimated at {costs.drop_points(least):.2f} points on {len(costs.margin)} held-out images")
    best = least
    finite = np.where(np.isfinite(noise), noise, 0.0)
    budgets = np.geomspace(max(finite[finite > 0].min(initial=np.inf), 1e-300), max(finite.max(axis=1).sum(), 1e-300),
                           BUDGET_STEPS) if (finite > 0).any() else []
    for budget in budgets:
        choice = _knapsack(costs.masked(costs.bytes.astype(np.float64)), finite, budget)
        if choice is not None and costs.drop_points(choice) <= max_drop and costs.size_bytes(choice) < costs.size_bytes(best):
            best = choice
    low = float(costs.masked(costs.bytes.astype(np.float64)).min(axis=1).sum())
    high = float(costs.size_bytes(best) - costs.other_bytes)
    for _ in range(BISECT_STEPS):  # the --size-mb answers (least estimate within a size) between the smallest and best
        middle = (low + high) / 2
        choice = _least_drop_at(costs, middle)
        if costs.drop_points(choice) > max_drop:
            low = middle
            continue
        high = middle
        if costs.size_bytes(choice) < costs.size_bytes(best):
            best = choice
    best = _improve(best, costs, lambda c: costs.drop_points(c) <= max_drop, lambda c: costs.size_bytes(c))
    return _faster_attention(best, costs, max_drop)


def _faster_attention(choice: np.ndarray, costs: FormatCosts, max_drop: float) -> np.ndarray:
    """`choice` with the float32 layers that may be int8 at no bytes (attention matmuls) in int8, the least noisy
    first, while the estimate stays within `max_drop`."""
    int8, float32 = costs.formats.index(INT8), costs.formats.index(FLOAT32)
    free = [row for row in range(len(choice)) if choice[row] == float32 and costs.mask[row, int8]
            and costs.bytes[row, int8] == costs.bytes[row, float32]]
    choice = choice.copy()
    for row in sorted(free, key=lambda r: costs.noise()[r, int8]):
        choice[row] = int8
        if costs.drop_points(choice) > max_drop:
            choice[row] = float32
    return choice


def check_size(sizes: np.ndarray, other: int, formats: tuple[str, ...], size_mb: float) -> None:
    """An EdgevitError when even the smallest format of every layer (bytes [L, F]) exceeds --size-mb."""
    smallest = sizes.argmin(axis=1)
    total = int(sizes.min(axis=1).sum()) + other
    if total > size_mb * 1e6:
        names = ", ".join(sorted({formats[f] for f in smallest}))
        raise EdgevitError(f"no choice of formats fits --size-mb {size_mb}: the smallest ({names}) takes {total / 1e6:.3f} MB")


def _least_drop_within(costs: FormatCosts, size_mb: float) -> np.ndarray:
    check_size(costs.bytes, costs.other_bytes, costs.formats, size_mb)
    return _least_drop_at(costs, size_mb * 1e6 - costs.other_bytes)


def _least_drop_at(costs: FormatCosts, gemm_bytes: float) -> np.ndarray:
    """The least estimate whose GEMM weights take at most `gemm_bytes` (the smallest formats fit)."""
    choice = _knapsack(costs.masked(costs.noise()), costs.bytes.astype(np.float64), gemm_bytes)
    start = costs.masked(costs.bytes.astype(np.float64)).argmin(axis=1) if choice is None else choice
    return _improve(start, costs, lambda c: costs.size_bytes(c) - costs.other_bytes <= gemm_bytes, costs.drop_points)


def _argmin_then(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Per row, the index with the least primary value, ties broken by the least secondary one."""
    return np.array([np.lexsort((s, p))[0] for p, s in zip(primary, secondary)])


def _knapsack(cost: np.ndarray, weight: np.ndarray, capacity: float) -> np.ndarray | None:
    """One option per row [L, F] with the least total cost whose total weight stays <= capacity (weights >= 0,
    rounded up to RESOLUTION steps of the capacity, so the answer always fits); None if nothing fits."""
    rows, options = cost.shape
    units = np.where(weight > 0, RESOLUTION + 1, 0) if capacity <= 0 else np.ceil(weight / capacity * RESOLUTION)
    units = units.astype(np.int64)
    best = np.full(RESOLUTION + 1, np.inf)
    best[0] = 0.0
    picks = np.zeros((rows, RESOLUTION + 1), dtype=np.int64)
    for row in range(rows):
        new = np.full(RESOLUTION + 1, np.inf)
        for option in range(options):
            step = units[row, option]
            if step > RESOLUTION:
                continue
            candidate = np.full(RESOLUTION + 1, np.inf)
            candidate[step:] = best[: RESOLUTION + 1 - step] + cost[row, option]
            better = candidate < new
            new[better] = candidate[better]
            picks[row, better] = option
        best = new
    if not np.isfinite(best).any():
        return None
    used = int(np.argmin(best))
    choice = np.zeros(rows, dtype=np.int64)
    for row in reversed(range(rows)):
        choice[row] = picks[row, used]
        used -= units[row, choice[row]]
    return choice


def _improve(choice: np.ndarray, costs: FormatCosts, allowed: Callable[[np.ndarray], bool],
             score: Callable[[np.ndarray], float]) -> np.ndarray:
    """Move one layer at a time to the format that lowers `score` most while `allowed` holds, until none does."""
    choice = choice.copy()
    current = score(choice)
    while True:
        best_move, best_score = None, current
        for layer in range(len(choice)):
            for option in np.flatnonzero(costs.mask[layer]):
                trial = choice.copy()
                trial[layer] = option
                if option != choice[layer] and score(trial) < best_score and allowed(trial):
                    best_move, best_score = (layer, option), score(trial)
        if best_move is None:
            return choice
        choice[best_move[0]] = best_move[1]
        current = best_score


def format_costs(qvit: QuantizedViT, formats: tuple[str, ...], config: QuantConfig, changes) -> FormatCosts:
    """The FormatCosts of `qvit`'s GEMMs from MarginChanges (compile.quant.accuracy_proxy): the linears in `formats`
    (--formats), each block's attention in ATTENTION_CHOICES whatever --formats says (no weights to size)."""
    columns = formats + tuple(fmt for fmt in ATTENTION_CHOICES if fmt not in formats)
    linears, blocks = qvit.linears(), [block.attention for block in qvit.vit.blocks]
    zeros = np.zeros(len(changes.margin))
    moves = [np.stack([changes.delta2[linear.name].get(fmt, zeros) for fmt in columns]) for linear in linears]
    moves += [np.stack([changes.attention[name] if fmt == INT8 else zeros for fmt in columns]) for name in blocks]
    allowed = [[fmt in formats for fmt in columns]] * len(linears) + [[fmt in ATTENTION_CHOICES for fmt in columns]] * len(blocks)
    return FormatCosts(
        layers=tuple(linear.name for linear in linears) + tuple(blocks), formats=columns,
        bytes=np.concatenate([layer_bytes(qvit, columns, config), np.zeros((len(blocks), len(columns)), np.int64)]),
        delta2=np.stack(moves), margin=changes.margin, correct=changes.correct, base=zeros,
        other_bytes=other_bytes(qvit.vit), allowed=np.array(allowed),
    )


def other_bytes(vit: ViT) -> int:
    """Bytes of the float32 parameters outside the GEMM weights: biases, embeddings, LayerNorms."""
    norms = [vit.norm_pre, vit.final_norm, *(n for b in vit.blocks for n in (b.ln1, b.ln2, b.q_norm, b.k_norm))]
    arrays = [vit.prefix, vit.pos, *(linear.bias for linear in vit.linears()),
              *(a for n in norms if n is not None for a in (n.gamma, n.beta))]
    return 4 * sum(int(np.size(a)) for a in arrays)


def parameter_bytes(qvit: QuantizedViT, formats: LayerFormats, config: QuantConfig) -> int:
    """Bytes of every parameter of `qvit` with each GEMM weight in its format of `formats`."""
    return other_bytes(qvit.vit) + sum(weight_bytes(formats[linear.name], *linear.weight.shape, config.w4_group)
                                       for linear in qvit.linears())


def layer_bytes(qvit: QuantizedViT, formats: tuple[str, ...], config: QuantConfig) -> np.ndarray:
    """[L, F]: each GEMM weight's bytes in each format."""
    return np.array([[weight_bytes(fmt, *linear.weight.shape, config.w4_group) for fmt in formats]
                     for linear in qvit.linears()], dtype=np.int64)


def choose_formats(model: torch.nn.Module, qvit: QuantizedViT, config: QuantConfig, formats: tuple[str, ...],
                   images: np.ndarray, labels: list[int] | None,
                   log: Callable[[str], None]) -> tuple[LayerFormats, dict]:
    """The layer table of `qvit` (int4 weights attached) under config's budget, measured on the held-out `images`
    through `model` (float, ToMe-patched as it will run), and what the manifest records about the choice."""
    from rich.progress import Progress

    from compile.quant.accuracy_proxy import CHUNK_IMAGES, margin_changes

    if config.size_mb is not None:  # before the measurement: sizes need no images
        check_size(layer_bytes(qvit, formats, config), other_bytes(qvit.vit), formats, config.size_mb)
    with Progress(transient=True) as progress:
        task = progress.add_task("measuring formats on held-out images", total=-(-len(images) // CHUNK_IMAGES))
        changes = margin_changes(model, qvit, images, labels, formats, lambda: progress.advance(task))
    costs = format_costs(qvit, formats, config, changes)
    choice = choose(costs, config.max_drop, config.size_mb)
    table = chosen_formats(qvit.vit, {name: costs.formats[option] for name, option in zip(costs.layers, choice)}, INT8)
    attention = {block.attention: table[block.attention] for block in qvit.vit.blocks}
    summary = {"estimated_drop_points": round(costs.drop_points(choice), 4), "size_mb": costs.size_bytes(choice) / 1e6,
               "heldout_images": len(images), "attention_formats": attention,
               "everywhere": {fmt: {"estimated_drop_points": round(costs.drop_points(costs.everywhere(fmt)), 4),
                                    "size_mb": costs.size_bytes(costs.everywhere(fmt)) / 1e6} for fmt in formats}}
    log(f"      mixed: estimated drop {summary['estimated_drop_points']:.2f} points on {len(images)} held-out images, "
        f"{summary['size_mb']:.2f} MB of parameters ("
        + "; ".join(f"{fmt} everywhere: {v['estimated_drop_points']:.2f} points, {v['size_mb']:.2f} MB"
                    for fmt, v in summary["everywhere"].items()) + ")")
    for fmt in costs.formats:
        names = [name for name, chosen in table.table if chosen == fmt]
        if names:
            log(f"      {fmt} ({len(names)}): {', '.join(names)}")
    return table, summary
