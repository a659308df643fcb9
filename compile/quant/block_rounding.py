"""Block-wise learned rounding of int4 weights after GPTQ (AdaRound's relaxation, BRECQ's block objective).

GPTQ rounds each GEMM against its own output error. The model feels a block's output, through softmax, GELU
and the int8 activations between the GEMMs, and one GEMM's rounding can make up for another's. So, block by
block, on the calibration images (the block's input from the blocks already rounded, its target the float
model's block output on the float input, so a block also makes up for the error it is handed):
- every int4 code of the block's w4a8 GEMMs may stay at GPTQ's code or move one step toward the float weight;
- the choice is relaxed to h(v) in [0, 1] (AdaRound's rectified sigmoid), learned by Adam on the output's squared
  error, with a term that drives every h to 0 or 1 after a warm-up (its exponent annealed from 20 to 2);
- the codes are rounded (h >= 1/2) and kept only if the block's output error on all the calibration images
  falls below GPTQ's (so no block gets worse on them).
The int8 roundings inside the block pass gradients straight through. Cost: STEPS forward and backward passes of
the block on BATCH images, ~1 minute per DeiT-tiny block on two cores (~16x that for a ViT-B block).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from compile.model.tome_patch import transformer_blocks
from compile.quant.format_error import FormatLinear, format_linear
from compile.quant.formats import W4A8, LayerFormats
from compile.quant.int4 import INT4_MAX, int4_weight, row_scales
from compile.quant.scales import QLinear, QuantizedViT
from compile.quant.simulate import SimulatedGemm, simulated_model, straight_through

STEPS = 300  # Adam steps per block
BATCH = 32  # images per step
LEARNING_RATE = 1e-2
ROUNDING_WEIGHT = 0.01  # of the term that drives h(v) to 0 or 1, against the per-token squared error
WARMUP = 0.2  # share of the steps before that term starts
START = 0.3  # h(v) at the start: 0.3 toward GPTQ's code (0.7 where GPTQ's code is the window's upper end)
STRETCH = (-0.1, 1.1)  # the rectified sigmoid's range before clipping to [0, 1] (AdaRound's gamma, zeta)
CHUNK = 32  # images per forward pass where no gradient is needed


def soft_step(v: torch.Tensor) -> torch.Tensor:
    """AdaRound's rectified sigmoid: 0 or 1 exactly beyond a finite v, so a settled choice stops moving."""
    low, high = STRETCH
    return torch.clamp(torch.sigmoid(v) * (high - low) + low, 0, 1)


def _logit_of(step: float) -> float:
    low, high = STRETCH
    p = (step - low) / (high - low)
    return float(np.log(p / (1 - p)))


class LearnedCodes(nn.Module):
    """A w4a8 GEMM whose codes are low + h(v): low the lower end of the window {GPTQ's code, the next code toward
    the float weight}. Computes like the GEMM's FormatLinear (int8 input rounded straight through)."""

    def __init__(self, linear: QLinear, float_weight: np.ndarray, gemm: FormatLinear):
        super().__init__()
        w4 = linear.int4
        steps = row_scales(w4.scales, w4.group, w4.rows)
        codes = w4.codes().astype(np.int64)
        toward = np.sign(linear.folded_weight(float_weight) / steps - codes)
        low = np.clip(codes - (toward < 0), -INT4_MAX, INT4_MAX - 1)
        self.register_buffer("low", torch.from_numpy(low.astype(np.float32)))
        self.register_buffer("unit", torch.from_numpy((steps * linear.row_steps()[:, None]).astype(np.float32)))
        upper = torch.from_numpy(codes > low)
        self.v = nn.Parameter(torch.where(upper, _logit_of(1 - START), _logit_of(START)).float())
        self.gemm = gemm

    def codes(self) -> np.ndarray:
        """int8 [K, N]: the rounded choice."""
        return (self.low + (self.v.detach() >= 0).float()).numpy().astype(np.int8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gemm = self.gemm
        x = torch.clamp(straight_through(x / gemm.input_scale), *gemm.input_range)
        return x @ ((self.low + soft_step(self.v)) * self.unit) + gemm.bias

    def undecided(self, exponent: float) -> torch.Tensor:
        """AdaRound's rounding term: sum of 1 - |2h - 1|^exponent, 0 when every h is 0 or 1."""
        return (1 - (2 * soft_step(self.v) - 1).abs().pow(exponent)).sum()


def learn_block_rounding(model: nn.Module, qvit: QuantizedViT, formats: LayerFormats, images: np.ndarray,
                         progress: Callable[[], None] | None = None, steps: int = STEPS, batch: int = BATCH,
                         seed: int = 0) -> QuantizedViT:
    """`qvit` (int4 weights by GPTQ) with each block's w4a8 codes learned against `model`'s (float timm ViT without
    ToMe) block outputs on `images` [n, 3, H, W]; the recipe records each block's output error before and after."""
    sim = simulated_model(model, qvit, formats, straight=True)
    floats, soft = transformer_blocks(model), transformer_blocks(sim)
    weights = {linear.name: linear.weight for linear in qvit.vit.linears()}
    quantized_input, float_input = (_block_input(m, images) for m in (sim, model))
    generator = torch.Generator().manual_seed(seed)
    blocks, record = list(qvit.blocks), []
    for index, (block, float_block) in enumerate(zip(soft, floats)):
        target = _chunked(float_block, float_input)
        output = _chunked(block, quantized_input)
        before = after = _mean_squared_error(output, target)
        gemms = {gemm.name: gemm for gemm in block.modules()
                 if isinstance(gemm, SimulatedGemm) and formats[gemm.name] == W4A8}
        if gemms:  # none when --keep-float kept all four in float32
            candidate, learned_output = _learned_block(block, gemms, qvit, blocks[index], weights, quantized_input,
                                                       target, steps, batch, generator, progress)
            after = _mean_squared_error(learned_output, target)
            if after < before:
                blocks[index], output = candidate, learned_output
        record.append({"gptq": before, "learned": after, "kept": after < before})
        quantized_input, float_input = output, target
    recipe = {**qvit.recipe, "block_rounding": {"steps": steps, "batch": batch, "images": len(images),
                                                "block_output_mse": record}}
    return dataclasses.replace(qvit, blocks=tuple(blocks), recipe=recipe)


def _learned_block(block: nn.Module, gemms: dict[str, SimulatedGemm], qvit: QuantizedViT, qblock,
                   weights: dict[str, np.ndarray], inputs: torch.Tensor, target: torch.Tensor, steps: int, batch: int,
                   generator: torch.Generator, progress: Callable[[], None] | None):
    """(the QBlock with the learned codes, the simulated block's output on `inputs` with them). The block is left
    computing with them: the simulation runs each block once, and only its output goes on."""
    learned = {name: LearnedCodes(qvit.layer(name), weights[name], gemm.compute) for name, gemm in gemms.items()}
    for name, gemm in gemms.items():
        gemm.compute = learned[name]
    _learn(block, learned, inputs, target, steps, batch, generator, progress)
    recoded = {name: _recoded(qvit.layer(name), codes.codes()) for name, codes in learned.items()}
    for name, gemm in gemms.items():
        gemm.compute = format_linear(recoded[name], W4A8, weights[name])
    fields = {field: recoded.get(getattr(qblock, field).name, getattr(qblock, field))
              for field in ("qkv", "proj", "fc1", "fc2")}
    return dataclasses.replace(qblock, **fields), _chunked(block, inputs)


def _learn(block: nn.Module, learned: dict[str, LearnedCodes], inputs: torch.Tensor, target: torch.Tensor,
           steps: int, batch: int, generator: torch.Generator, progress: Callable[[], None] | None) -> None:
    """Adam on the block's per-token squared error plus the annealed rounding term (the block computing with
    `learned`)."""
    optimizer = torch.optim.Adam([codes.v for codes in learned.values()], lr=LEARNING_RATE)
    for step in range(steps):
        picked = torch.randint(0, len(inputs), (min(batch, len(inputs)),), generator=generator)
        loss = ((block(inputs[picked]) - target[picked]) ** 2).sum(-1).mean()
        late = (step / steps - WARMUP) / (1 - WARMUP)
        if late >= 0:
            exponent = 20 - 18 * late
            loss = loss + ROUNDING_WEIGHT * sum(codes.undecided(exponent) for codes in learned.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress()


def _recoded(linear: QLinear, codes: np.ndarray) -> QLinear:
    """`linear` with new int4 codes on its scales."""
    w4 = linear.int4
    return dataclasses.replace(linear, int4=int4_weight(codes, w4.column_scale, w4.multiplier, w4.group))


class _Stop(Exception):
    pass


def _block_input(model: nn.Module, images: np.ndarray) -> torch.Tensor:
    """[n, tokens, C]: what `model`'s first block reads (whatever the embedding: class / register tokens, pos_embed)."""
    captured = []

    def capture(module, args):
        captured.append(args[0].detach())
        raise _Stop

    hook = transformer_blocks(model)[0].register_forward_pre_hook(capture)
    try:
        with torch.no_grad():
            for start in range(0, len(images), CHUNK):
                try:
                    model(torch.from_numpy(images[start:start + CHUNK]))
                except _Stop:
                    pass
    finally:
        hook.remove()
    return torch.cat(captured)


def _chunked(block: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([block(inputs[start:start + CHUNK]) for start in range(0, len(inputs), CHUNK)])


def _mean_squared_error(output: torch.Tensor, target: torch.Tensor) -> float:
    return float(((output - target).double() ** 2).mean())
