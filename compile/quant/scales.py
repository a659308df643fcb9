"""QuantizedViT: the quantization parameters of a ViT description, per layer (int8 weights, activation scales,
channel groups), from its calibration statistics. Every int8 matmul is a `QLinear`:

    x_q[k] = clamp(round(x[k] / input_scale[k]), -127, 127)                 (int8 input)
    acc[n] = sum over segments (start, stop, shift) of (x_q[start:stop] @ weight[start:stop, n]) << shift
    y[n]   = acc[n] * acc_scale[n] + bias[n],   acc_scale = input_base * weight_scale

Outlier channels (ViT LayerNorm outputs and fc2 inputs have a few huge ones) are handled two ways:
- LayerNorm outputs (--outliers on) get one scale per channel; the ratio is folded into the next
  weight's rows (weight[k, :] * input_scale[k] before per-column quantization), so the GEMM is
  unchanged and LayerNorm (float or integer) produces the per-channel int8 values directly.
- fc2 inputs (after GELU) may get power-of-two channel groups (Tender, --fc2-groups G): group g has
  scale input_base * 2^g, the channels of a group are contiguous (fc1's output columns and fc2's
  input rows are permuted offline, in the description the parameters come with), and the partial sums
  combine with shifts: no runtime requantization.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from compile.model.vit import Block, Linear, ViT
from compile.quant.calibration import SiteStats
from compile.quant.config import QuantConfig
from compile.quant.format_error import attach_int4
from compile.quant.hessian import Gram
from compile.quant.int4 import Int4Weight
from compile.quant.observers import QMAX, activation_scale
from compile.quant.weights import quantize_weight

SEGMENT_ALIGN = 16  # channel groups are multiples of this (the int8 kernels' K blocking)
PROB_SCALE = 1.0 / 255.0  # attention probabilities as uint8, at PROB_SCALE * 2^-shift (a shift per head)
MAX_PROB_SHIFT = 7


@dataclass(frozen=True)
class QLinear:
    """One int8 GEMM with its input quantization (see the module docstring for the semantics)."""

    name: str
    weight: np.ndarray  # int8 [K, N]
    weight_scale: np.ndarray  # float32 [N]
    bias: np.ndarray  # float32 [N] (the patch embedding's has the input normalization folded in)
    input_scale: np.ndarray  # float32 [K]
    input_base: float
    segments: tuple[tuple[int, int, int], ...]
    input_range: tuple[int, int] = (-QMAX, QMAX)  # (0, 255) for uint8 pixels
    rel_error: float = 0.0  # relative squared error of y on calibration rows, with int8 input and weights
    input_offset: np.ndarray | None = None  # float32 [K]: the layer reads x - offset (the patch embedding's pixels)
    int4: Int4Weight | None = None  # low-bit modes: the 4-bit weight of the folded weight (the recipe's rounding)
    errors: dict[str, float] = field(default_factory=dict)  # low-bit modes: the relative error in each format

    @property
    def acc_scale(self) -> np.ndarray:
        return (self.input_base * self.weight_scale).astype(np.float32)

    def row_steps(self) -> np.ndarray:
        """float64 [K]: what one integer input step counts in the accumulator, input_base * 2^shift per row."""
        return _row_steps(self.input_base, self.segments, len(self.input_scale))

    def folded_weight(self, float_weight: np.ndarray) -> np.ndarray:
        """float64 [K, N]: `float_weight` in units of the integer input (input scales folded into its rows), what
        the int8 and int4 weights quantize."""
        return float_weight * (self.input_scale / self.row_steps())[:, None]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x / self.input_scale), *self.input_range).astype(np.int16)

    def accumulate(self, x_q: np.ndarray) -> np.ndarray:
        """The int32 accumulator for integer input rows (numpy, for the sensitivity pass). float64 BLAS is
        exact here: every partial sum stays far below 2^53."""
        acc = np.zeros((x_q.shape[0], self.weight.shape[1]), dtype=np.float64)
        for start, stop, shift in self.segments:
            acc += (x_q[:, start:stop].astype(np.float64) @ self.weight[start:stop].astype(np.float64)) * 2.0**shift
        return acc


@dataclass(frozen=True)
class QBlock:
    """The quantization parameters of one block: its four GEMMs and its int8 attention."""

    qkv: QLinear
    proj: QLinear
    fc1: QLinear
    fc2: QLinear
    qkv_scales: tuple[float, float, float]  # int8 scales of q, k, v (after the q/k norm when there is one)
    prob_shifts: tuple[int, ...] = ()  # per head; () = 0 for every head
    # q/k norm: int8-full first brings qkv's q and k accumulator columns to one power-of-two scale each (from the
    # calibrated pre-norm range), so that the integer LayerNorm sees uniform units; None without a q/k norm
    qk_pre_scales: tuple[float, float] | None = None

    def prob_scales(self, heads: int) -> np.ndarray:
        """float64 [heads, 1, 1]: each head's uint8 probability scale."""
        shifts = np.asarray(self.prob_shifts or (0,) * heads, dtype=np.float64)
        return (PROB_SCALE * np.exp2(-shifts)).reshape(heads, 1, 1)


@dataclass(frozen=True)
class QuantizedViT:
    """The parameters of every quantized layer of `vit`; the integer graphs take uint8 pixels [1, 3, H, W]."""

    vit: ViT  # the description the parameters belong to (fc1 / fc2 permuted for channel groups)
    mode: str
    patch: QLinear  # input: uint8 pixels in patch order (channel, row, column); normalization folded in
    blocks: tuple[QBlock, ...]
    heads: tuple[QLinear, ...]
    residual_scale: float  # int8-full: the residual stream is int32 at this power-of-two scale
    recipe: dict = field(default_factory=dict)

    def linears(self) -> list[QLinear]:
        return [self.patch, *(lin for b in self.blocks for lin in (b.qkv, b.proj, b.fc1, b.fc2)), *self.heads]

    def layer(self, name: str) -> QLinear:
        """The QLinear of the description's linear layer `name`."""
        return next(linear for linear in self.linears() if linear.name == name)


def _merged_hist(site: SiteStats) -> np.ndarray:
    """One histogram over [0, max] (per-channel histograms are merged, each bin moved by its center)."""
    if site.hist.ndim == 1:
        return site.hist
    bins = site.hist.shape[1]
    centers = (np.arange(bins) + 0.5)[None, :] * (site.absmax[:, None] / bins)
    index = np.minimum((centers / max(site.tensor_absmax, 1e-30) * bins).astype(np.int64), bins - 1)
    merged = np.zeros(bins)
    np.add.at(merged, index.ravel(), site.hist.ravel())
    return merged


def _tensor_scale(site: SiteStats, observer: str) -> float:
    """Per-tensor scale; an all-zero activation gets 1.0 (any scale represents 0 exactly)."""
    scale = activation_scale(_merged_hist(site), site.tensor_absmax, observer)
    return 1.0 if scale == 0 else scale


def _channel_scales(site: SiteStats, observer: str) -> np.ndarray:
    """Per-channel scales; all-zero channels get the median of the others, so folding their scale into
    the next weight's rows neither inflates nor starves those rows."""
    scales = activation_scale(site.hist, site.absmax, observer)
    zero = scales == 0
    if zero.any():
        scales = np.where(zero, np.median(scales[~zero]) if (~zero).any() else 1.0, scales).astype(np.float32)
    return scales


def degenerate_sites(stats: dict[str, SiteStats]) -> list[str]:
    """Activations (or channels of them) that were exactly 0 on every calibration image: they get
    stand-in scales (1.0 per tensor, the median per channel) so nothing divides by 0."""
    notes = []
    for name, site in stats.items():
        zero = int((site.absmax == 0).sum())
        if zero == len(site.absmax):
            notes.append(f"{name} is all zeros")
        elif zero and site.histogram == "channel":
            notes.append(f"{name} has {zero} all-zero channel(s) of {len(site.absmax)}")
    return notes


def _row_steps(input_base: float, segments, rows: int) -> np.ndarray:
    shifts = np.zeros(rows)
    for start, stop, shift in segments:
        shifts[start:stop] = shift
    return input_base * np.exp2(shifts)


def _linear(name: str, weight: np.ndarray, bias: np.ndarray, input_scale: np.ndarray, input_base: float,
            segments, config: QuantConfig, samples: np.ndarray, gram: Gram | None, input_range=(-QMAX, QMAX),
            input_offset: np.ndarray | None = None) -> QLinear:
    """Fold the input scales into the weight rows, quantize per column (or per tensor), and measure the
    layer's relative output error on the calibration rows `samples` [S, K] (float inputs); low-bit modes add
    the int4 weight (rounded against `gram`, X^T X of the inputs) and the error of every format."""
    folded = weight * (input_scale / _row_steps(input_base, segments, weight.shape[0]))[:, None]
    q, scale = quantize_weight(folded, per_channel=config.weight_scales == "channel")
    linear = QLinear(name, q, scale, bias.astype(np.float32), input_scale.astype(np.float32), float(input_base),
                     tuple(segments), input_range=input_range, input_offset=input_offset)
    linear = dataclasses.replace(linear, rel_error=relative_error(linear, weight.astype(np.float32), samples))
    return attach_int4(linear, weight, gram, samples, config) if config.low_bit else linear


def relative_error(linear: QLinear, float_weight: np.ndarray, samples: np.ndarray) -> float:
    """||y_int8 - y||^2 / ||y||^2 over sample rows: the layer's own quantization error (MoFQ-style metric)."""
    if len(samples) == 0:
        return 0.0
    x = samples.astype(np.float64)
    reference = x @ float_weight + linear.bias
    quantized = linear.accumulate(linear.quantize_input(samples)) * linear.acc_scale + linear.bias
    return float(((quantized - reference) ** 2).sum() / max((reference**2).sum(), 1e-30))


def _ln_input_linear(linear: Linear, site: SiteStats, config: QuantConfig) -> QLinear:
    """A linear layer after a LayerNorm: per-channel input scales folded into the weight (outliers on)."""
    name, weight, bias = linear.name, linear.weight, linear.bias
    k = weight.shape[0]
    if config.outliers:
        return _linear(name, weight, bias, _channel_scales(site, config.observer), 1.0, [(0, k, 0)], config,
                       site.sample_rows(), site.gram)
    scale = _tensor_scale(site, config.observer)
    return _linear(name, weight, bias, np.full(k, scale, np.float32), scale, [(0, k, 0)], config, site.sample_rows(),
                   site.gram)


def power_of_two_groups(absmax: np.ndarray, base: float, groups: int, align: int = SEGMENT_ALIGN) -> np.ndarray:
    """Group (0..groups-1) of each channel: the smallest g with absmax <= 127 * base * 2^g, after sorting
    channels by need and rounding each group boundary down to a multiple of `align` (channels only ever
    move to a coarser group, which never clips them)."""
    need = np.ceil(np.log2(np.maximum(absmax / (QMAX * base), 1e-30)))
    need = np.clip(need, 0, groups - 1).astype(np.int64)
    order = np.argsort(need, kind="stable")
    sorted_need = need[order]
    group = np.empty_like(need)
    start = 0
    for g in range(groups):
        stop = len(need) if g == groups - 1 else (int(np.searchsorted(sorted_need, g, side="right")) // align) * align
        stop = max(stop, start)
        group[order[start:stop]] = g
        start = stop
    return group


def _fc2_groups(fc2: Linear, site: SiteStats, config: QuantConfig) -> tuple[np.ndarray, QLinear]:
    """fc2 with its input in power-of-two channel groups; returns (channel order, fc2).

    The order permutes fc2's input rows here and must permute fc1's output columns the same way.
    The largest group has the per-tensor scale; a channel goes to a finer group only if its calibrated
    maximum fits there, so no channel is clipped more than per-tensor would.
    """
    hidden = fc2.weight.shape[0]
    tensor_scale = _tensor_scale(site, config.observer)
    if config.fc2_groups > 1:
        base = tensor_scale / 2 ** (config.fc2_groups - 1)
        group = power_of_two_groups(site.absmax, base, config.fc2_groups)
    else:
        base, group = tensor_scale, np.zeros(hidden, dtype=np.int64)
    order = np.argsort(group, kind="stable")
    group = group[order]
    segments = [(int(np.searchsorted(group, g)), int(np.searchsorted(group, g, side="right")), g)
                for g in range(int(group.max()) + 1)]
    segments = [seg for seg in segments if seg[1] > seg[0]]
    fc2_q = _linear(fc2.name, fc2.weight[order], fc2.bias, (base * np.exp2(group)).astype(np.float32), base,
                    segments, config, site.sample_rows()[:, order], site.gram and site.gram.permuted(order))
    return order, fc2_q


def _patch_linear(vit: ViT, config: QuantConfig, site: SiteStats) -> QLinear:
    """The patch embedding on uint8 pixels: x = pixel / (255 std_c) - mean_c / std_c folded into W and b."""
    weight, bias = vit.patch.weight, vit.patch.bias
    per_pixel = weight.shape[0] // 3
    scale = np.repeat(1.0 / (255.0 * np.asarray(vit.std, np.float64)), per_pixel)
    offset = np.repeat(-np.asarray(vit.mean, np.float64) / np.asarray(vit.std, np.float64), per_pixel)
    k = weight.shape[0]
    # calibration rows are normalized patches; the int8 graph sees their pixels, i.e. x - offset at `scale`
    return _linear(vit.patch.name, weight, (bias + offset @ weight).astype(np.float32), scale.astype(np.float32), 1.0,
                   [(0, k, 0)], config, site.sample_rows() - offset.astype(np.float32),
                   site.gram and site.gram.shifted(offset), input_range=(0, 255), input_offset=offset.astype(np.float32))


def prob_shifts(site: SiteStats) -> tuple[int, ...]:
    """Per head, the s in [0, MAX_PROB_SHIFT] with its calibrated largest probability <= 2^-s: the head's
    uint8 probabilities get 2^s times the levels. At 1/255 alone, a head that spreads its attention over
    more than 510 tokens (384 px and up, or any broad head) would round every probability to 0."""
    top = np.maximum(site.absmax.astype(np.float64), 1e-30)
    return tuple(int(s) for s in np.clip(np.floor(-np.log2(top)), 0, MAX_PROB_SHIFT))


def _block(block: Block, stats: dict[str, SiteStats], config: QuantConfig) -> tuple[Block, QBlock]:
    """(the block with fc1 / fc2 in channel-group order, its quantization parameters)."""
    site = lambda name: stats[f"blocks.{block.index}.{name}"]  # noqa: E731
    qkv = _ln_input_linear(block.qkv, site("ln1"), config)
    parts = ("q_normed", "k_normed", "v") if block.q_norm is not None else ("q", "k", "v")
    qkv_scales = tuple(_tensor_scale(site(part), config.observer) for part in parts)
    proj_scale = _tensor_scale(site("attn_out"), config.observer)
    dim = block.proj.weight.shape[0]
    proj = _linear(block.proj.name, block.proj.weight, block.proj.bias, np.full(dim, proj_scale, np.float32),
                   proj_scale, [(0, dim, 0)], config, site("attn_out").sample_rows(), site("attn_out").gram)
    order, fc2 = _fc2_groups(block.fc2, site("fc2_in"), config)
    permuted = dataclasses.replace(
        block, fc1=Linear(block.fc1.name, block.fc1.weight[:, order], block.fc1.bias[order]),
        fc2=Linear(block.fc2.name, block.fc2.weight[order], block.fc2.bias))
    fc1 = _ln_input_linear(permuted.fc1, site("ln2"), config)
    pre = None
    if block.q_norm is not None:
        pre = tuple(2.0 ** -_residual_exponent(site(part).tensor_absmax) for part in "qk")
    return permuted, QBlock(qkv, proj, fc1, fc2, qkv_scales, prob_shifts(site("probs")), pre)


def quantize_vit(vit: ViT, stats: dict[str, SiteStats], config: QuantConfig) -> QuantizedViT:
    """The QuantizedViT of a description from its calibration statistics."""
    blocks, qblocks = zip(*(_block(block, stats, config) for block in vit.blocks))
    heads = tuple(_ln_input_linear(head, stats["head_in"], config) for head in vit.heads)
    return QuantizedViT(
        vit=dataclasses.replace(vit, blocks=tuple(blocks)), mode=config.mode,
        patch=_patch_linear(vit, config, stats["patch_in"]), blocks=tuple(qblocks), heads=heads,
        residual_scale=2.0 ** -_residual_exponent(stats["residual"].tensor_absmax), recipe=config.summary(),
    )


RESIDUAL_BITS = 20  # calibrated |x| max -> 2^20: 2^10 headroom in int32 (ToMe sums up to ~200 tokens)


def _residual_exponent(residual_max: float) -> int:
    """R with residual_max * 2^R <= 2^RESIDUAL_BITS: the int32 residual stream's scale is 2^-R
    (kept in [0, 24] so that a degenerate or huge range still gives usable multipliers)."""
    if residual_max <= 0:
        return RESIDUAL_BITS
    return min(24, max(0, int(math.floor(RESIDUAL_BITS - math.log2(residual_max)))))
