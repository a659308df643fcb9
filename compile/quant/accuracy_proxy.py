"""How far each layer's format moves the model's decisions, to first order, on held-out calibration images.

Each held-out image's float top-1 holds against its runner-up by a logit margin m_i > 0 (what a
perturbation must overcome to change the prediction); images whose top-1 is the label are the ones a
flip costs (unlabelled images, of a --calib-images folder, all count). The margin moves, to first
order, by

    delta_{l,f,i} = < dm_i / dy_l , y_l in format f - y_l >       (y_l: layer l's output [tokens, N])

with both outputs computed from layer l's float input: one forward and one backward pass of the
float model give every layer's gradient, then one GEMM per layer and format the change. A block's
int8 attention (its q, k, v and probabilities on their grids) moves the margin by the sum of its
points' squared moves (`attention`, per block); float32 attention by nothing. compile.quant.mofq
turns these into an estimated top-1 drop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compile.quant.format_error import format_linear
from compile.quant.scales import QuantizedViT
from compile.quant.simulate import SimulatedGemm, simulated_model

CHUNK_IMAGES = 8  # images per forward / backward pass (every layer's input and gradient is held for them)


@dataclass(frozen=True)
class MarginChanges:
    """Per held-out image i: the float margin, whether a flip costs top-1, and the squared first-order moves."""

    margin: np.ndarray  # [I] > 0: top-1 minus runner-up logit of the float model
    correct: np.ndarray  # bool [I]: the top-1 is the label (all True without labels)
    delta2: dict[str, dict[str, np.ndarray]]  # layer -> format -> [I] (float32: 0)
    attention: dict[str, np.ndarray]  # block's attention layer -> [I]: its int8 points' squared moves, summed


def margin_changes(model: torch.nn.Module, qvit: QuantizedViT, images: np.ndarray, labels: list[int] | None,
                   formats: tuple[str, ...], progress=None) -> MarginChanges:
    """MarginChanges of every GEMM of `qvit` in each of `formats` on `images` [I, 3, H, W] (normalized)."""
    linears = {linear.name: linear for linear in qvit.linears()}
    recorded: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    attention = {f"{block.qkv.name}.": f"blocks.{block.index}.attention" for block in qvit.vit.blocks}

    def record(name: str, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        x.retain_grad()
        recorded.append((attention[name[: name.rindex(".") + 1]], x, (q - x).detach()))
        return x

    sim = simulated_model(model, qvit, {name: "float32" for name in linears}, quantizer=record)
    gemms = [m for m in sim.modules() if isinstance(m, SimulatedGemm)]
    weights = {linear.name: linear.weight for linear in qvit.vit.linears()}
    changed = {(name, fmt): format_linear(linear, fmt, weights[name]) for name, linear in linears.items() for fmt in formats
               if fmt != "float32"}
    parts: dict[tuple[str, str], list[torch.Tensor]] = {key: [] for key in changed}
    margins, correct = [], []
    moves: dict[str, list[torch.Tensor]] = {layer: [] for layer in attention.values()}
    for start in range(0, len(images), CHUNK_IMAGES):
        taps: list = []
        for gemm in gemms:
            gemm.taps = taps
        recorded.clear()
        x = torch.from_numpy(images[start:start + CHUNK_IMAGES]).requires_grad_(True)
        chunk_labels = None if labels is None else torch.tensor(labels[start:start + CHUNK_IMAGES])
        margin, right = _decision_margins(sim(x), chunk_labels)
        margin.sum().backward()
        with torch.no_grad():
            for name, rows, y in taps:
                for fmt in formats:
                    if fmt != "float32":
                        parts[(name, fmt)].append(_inner(y.grad, changed[(name, fmt)](rows) - y))
            for layer in moves:
                moves[layer].append(sum((_inner(t.grad, change) ** 2 for at, t, change in recorded if at == layer),
                                        torch.zeros(len(x), dtype=torch.float64)))
        margins.append(margin.detach())
        correct.append(right)
        if progress is not None:
            progress()
    delta2 = {name: {fmt: np.zeros(len(images)) if fmt == "float32" else (torch.cat(parts[(name, fmt)]) ** 2).numpy()
                     for fmt in formats} for name in linears}
    return MarginChanges(torch.cat(margins).numpy().astype(np.float64), torch.cat(correct).numpy(), delta2,
                         {layer: torch.cat(parts).numpy() for layer, parts in moves.items()})


def _decision_margins(logits: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 minus runner-up logit [B], whether the top-1 is the label [B]; all True without labels)."""
    top2 = logits.topk(2, dim=-1)
    right = torch.ones(len(logits), dtype=torch.bool) if labels is None else top2.indices[:, 0] == labels
    return top2.values[:, 0] - top2.values[:, 1], right


def _inner(grad: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """Per image: the sum of grad * change over everything but the batch axis (float64)."""
    return (grad.double() * change.double()).flatten(1).sum(dim=1)
