"""QuantizedViT: a timm ViT as int8 weights, activation scales and channel groups.

Built from the float model and its calibration statistics. Every int8 matmul is a `QLinear`:

    x_q[k] = clamp(round(x[k] / input_scale[k]), -127, 127)                 (int8 input)
    acc[n] = sum over segments (start, stop, shift) of (x_q[start:stop] @ weight[start:stop, n]) << shift
    y[n]   = acc[n] * acc_scale[n] + bias[n],   acc_scale = input_base * weight_scale

Outlier channels (ViT LayerNorm outputs and fc2 inputs have a few huge ones) are handled two ways:
- LayerNorm outputs (--outliers on) get one scale per channel; the ratio is folded into the next
  weight's rows (weight[k, :] * input_scale[k] before per-column quantization), so the GEMM is
  unchanged and LayerNorm (float or integer) produces the per-channel int8 values directly.
- fc2 inputs (after GELU) may get power-of-two channel groups (Tender, --fc2-groups G): group g has
  scale input_base * 2^g, the channels of a group are contiguous (fc1's output columns and fc2's
  input rows are permuted offline), and the partial sums combine with shifts: no runtime requantization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compile.quant.calibration import SiteStats
from compile.quant.config import QuantConfig
from compile.quant.hessian import Gram
from compile.quant.int4 import Int4Weight
from compile.quant.layer_formats import attach_int4
from compile.quant.observers import QMAX, activation_scale
from compile.quant.weights import quantize_weight

SEGMENT_ALIGN = 16  # channel groups are multiples of this (the int8 kernels' K blocking)
PROB_SCALE = 1.0 / 255.0  # attention probabilities as uint8, at PROB_SCALE * 2^-shift (a shift per head)
MAX_PROB_SHIFT = 7


@dataclass
class QLinear:
    """One int8 GEMM with its input quantization (see the module docstring for the semantics)."""

    name: str
    weight: np.ndarray  # int8 [K, N]
    weight_scale: np.ndarray  # float32 [N]
    bias: np.ndarray  # float32 [N]
    input_scale: np.ndarray  # float32 [K]
    input_base: float
    segments: tuple[tuple[int, int, int], ...]
    float_weight: np.ndarray  # float32 [K, N], the original (permuted) weight: used when kept in float
    input_range: tuple[int, int] = (-QMAX, QMAX)  # (0, 255) for uint8 pixels
    format: str = "int8"  # config.LAYER_FORMATS: how this GEMM runs (compile.quant.layer_formats)
    rel_error: float = 0.0  # relative squared error of y on calibration rows with integer input and weights
    input_offset: np.ndarray | None = None  # float32 [K]: the layer reads x - offset (the patch embedding's pixels)
    int4: Int4Weight | None = None  # low-bit modes: the 4-bit weight of the folded weight
    errors: dict[str, float] = field(default_factory=dict)  # low-bit modes: rel_error in each format

    @property
    def kept_float(self) -> bool:
        return self.format == "float32"

    def set_format(self, fmt: str) -> None:
        """Run in `fmt` from now on. rel_error follows the integer weights it runs (int8 or w4a8); a float format
        keeps it, the layer's sensitivity."""
        if fmt in ("int8", "w4a8") and fmt in self.errors:
            self.rel_error = self.errors[fmt]
        self.format = fmt

    @property
    def acc_scale(self) -> np.ndarray:
        return (self.input_base * self.weight_scale).astype(np.float32)

    def row_steps(self) -> np.ndarray:
        """float64 [K]: what one integer input step counts in the accumulator, input_base * 2^shift per row."""
        return _row_steps(self.input_base, self.segments, len(self.input_scale))

    def folded_weight(self) -> np.ndarray:
        """float64 [K, N]: the weight in units of the integer input (input scales folded into its rows), what the
        int8 and int4 weights quantize."""
        return self.float_weight * (self.input_scale / self.row_steps())[:, None]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x / self.input_scale), *self.input_range).astype(np.int16)

    def accumulate(self, x_q: np.ndarray) -> np.ndarray:
        """The int32 accumulator for integer input rows (numpy, for the sensitivity pass). float64 BLAS is
        exact here: every partial sum stays far below 2^53."""
        acc = np.zeros((x_q.shape[0], self.weight.shape[1]), dtype=np.float64)
        for start, stop, shift in self.segments:
            acc += (x_q[:, start:stop].astype(np.float64) @ self.weight[start:stop].astype(np.float64)) * 2.0**shift
        return acc


@dataclass
class QLayerNorm:
    gamma: np.ndarray  # float32 [C]
    beta: np.ndarray  # float32 [C]
    eps: float


@dataclass
class QKNorm:
    """LayerNorms over each head's q and k (timm's qk_norm), applied between qkv and the int8 q, k.

    int8-full first brings qkv's per-column accumulator to one power-of-two scale per part
    (`pre_scales`, from the calibrated pre-norm range) so that the integer LayerNorm sees uniform units."""

    q: QLayerNorm
    k: QLayerNorm
    pre_scales: tuple[float, float]


@dataclass
class QBlock:
    ln1: QLayerNorm
    qkv: QLinear
    qkv_scales: tuple[float, float, float]  # int8 scales of q, k, v (after the q/k norm when there is one)
    proj: QLinear
    ln2: QLayerNorm
    fc1: QLinear
    fc2: QLinear
    tome_r: int = 0
    activation: str = "gelu"  # or "quick_gelu": x * sigmoid(1.702 x) (OpenAI CLIP)
    qk_norm: QKNorm | None = None
    prob_shifts: tuple[int, ...] = ()  # per head; () = 0 for every head

    def prob_scales(self, heads: int) -> np.ndarray:
        """float64 [heads, 1, 1]: each head's uint8 probability scale."""
        shifts = np.asarray(self.prob_shifts or (0,) * heads, dtype=np.float64)
        return (PROB_SCALE * np.exp2(-shifts)).reshape(heads, 1, 1)


@dataclass
class QuantizedViT:
    """Everything the integer graph needs; the input is uint8 pixels [1, 3, H, W].

    The token rows are the prefix tokens (class, registers, distillation) then the patches. `norm` is
    the LayerNorm before the head: timm's `norm` on every row for class-token pooling, or `fc_norm` on
    the mean of the patch rows for average pooling."""

    mode: str
    image_size: int
    patch_size: int
    num_heads: int
    patch: QLinear  # input: uint8 pixels in patch order (channel, row, column); normalization folded in
    prefix: np.ndarray  # float32 [P, C]: class / register / distillation tokens with their position embedding
    pos: np.ndarray  # float32 [patches, C]
    blocks: list[QBlock]
    norm: QLayerNorm
    heads: list[QLinear]  # token pooling: head i reads prefix token i; logits are their mean
    residual_scale: float  # int8-full: the residual stream is int32 at this power-of-two scale
    recipe: dict = field(default_factory=dict)
    norm_pre: QLayerNorm | None = None  # a LayerNorm on the embedded tokens before the blocks (CLIP)
    pool: str = "token"  # or "avg": the mean of the patch rows feeds the head

    @property
    def num_prefix(self) -> int:
        return self.prefix.shape[0]

    def linears(self) -> list[QLinear]:
        return [self.patch, *(lin for b in self.blocks for lin in (b.qkv, b.proj, b.fc1, b.fc2)), *self.heads]


def _np(t) -> np.ndarray:
    return t.detach().float().numpy().astype(np.float32)


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
                     tuple(segments), weight.astype(np.float32), input_range=input_range, input_offset=input_offset)
    linear.rel_error = relative_error(linear, samples)
    if config.low_bit:
        attach_int4(linear, gram, samples, config)
    return linear


def relative_error(linear: QLinear, samples: np.ndarray) -> float:
    """||y_int8 - y||^2 / ||y||^2 over sample rows: the layer's own quantization error (MoFQ-style metric)."""
    if len(samples) == 0:
        return 0.0
    x = samples.astype(np.float64)
    reference = x @ linear.float_weight + linear.bias
    quantized = linear.accumulate(linear.quantize_input(samples)) * linear.acc_scale + linear.bias
    return float(((quantized - reference) ** 2).sum() / max((reference**2).sum(), 1e-30))


def _ln_input_linear(name: str, weight, bias, site: SiteStats, config: QuantConfig) -> QLinear:
    """A linear layer after a LayerNorm: per-channel input scales folded into the weight (outliers on)."""
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


def _fc2_groups(fc2: tuple, site: SiteStats, config: QuantConfig, block: int) -> tuple[np.ndarray, QLinear]:
    """fc2 with its input in power-of-two channel groups; returns (channel order, fc2).

    The order permutes fc2's input rows here and must permute fc1's output columns the same way.
    The largest group has the per-tensor scale; a channel goes to a finer group only if its calibrated
    maximum fits there, so no channel is clipped more than per-tensor would.
    """
    weight, bias = fc2
    hidden = weight.shape[0]
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
    fc2_q = _linear(f"blocks.{block}.fc2", weight[order], bias, (base * np.exp2(group)).astype(np.float32), base,
                    segments, config, site.sample_rows()[:, order], site.gram and site.gram.permuted(order))
    return order, fc2_q


def _patch_linear(model, config: QuantConfig, mean, std, site: SiteStats) -> QLinear:
    """The patch embedding on uint8 pixels: x = pixel / (255 std_c) - mean_c / std_c folded into W and b."""
    conv = model.patch_embed.proj
    weight = _np(conv.weight)
    if weight.ndim == 4:  # Conv2d [C, 3, p, p] -> [3 * p * p, C]
        weight = weight.reshape(weight.shape[0], -1).T
    bias = _np(conv.bias) if conv.bias is not None else np.zeros(weight.shape[1], np.float32)
    per_pixel = weight.shape[0] // 3
    scale = np.repeat(1.0 / (255.0 * np.asarray(std, np.float64)), per_pixel)
    offset = np.repeat(-np.asarray(mean, np.float64) / np.asarray(std, np.float64), per_pixel)
    k = weight.shape[0]
    # calibration rows are normalized patches; the int8 graph sees their pixels, i.e. x - offset at `scale`
    return _linear("patch_embed", weight, (bias + offset @ weight).astype(np.float32), scale.astype(np.float32), 1.0,
                   [(0, k, 0)], config, site.sample_rows() - offset.astype(np.float32),
                   site.gram and site.gram.shifted(offset), input_range=(0, 255), input_offset=offset.astype(np.float32))


def _layer_norm(module) -> QLayerNorm:
    return QLayerNorm(_np(module.weight), _np(module.bias), float(module.eps))


def _linear_params(module) -> tuple[np.ndarray, np.ndarray]:
    """(weight [in, out], bias [out]) of an nn.Linear."""
    bias = _np(module.bias) if module.bias is not None else np.zeros(module.out_features, np.float32)
    return _np(module.weight).T.copy(), bias


def _branch_params(module, layer_scale) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of the linear that ends a residual branch, with the branch's LayerScale (DeiT III,
    DINOv2) folded in: gamma * (x @ W + b) = x @ (W * gamma) + b * gamma, per output column, so the integer
    graph needs no op for it (the column's weight scale absorbs gamma)."""
    weight, bias = _linear_params(module)
    gamma = getattr(layer_scale, "gamma", None)
    if gamma is None:  # nn.Identity: no LayerScale
        return weight, bias
    return weight * _np(gamma), bias * _np(gamma)


def _head_params(module, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a classifier head; an identity for a head removed by --output features.

    The identity reads the final LayerNorm out exactly as a head would (int8 at the calibrated per-channel
    scales, in both numerics): folded into per-column weight scales it quantizes to 127 on the diagonal,
    so y = x_q * input_scale with no rounding of its own, and one 1 x C x C GEMM costs next to nothing.
    """
    from torch import nn

    if isinstance(module, nn.Identity):
        return np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32)
    return _linear_params(module)


def prob_shifts(site: SiteStats) -> tuple[int, ...]:
    """Per head, the s in [0, MAX_PROB_SHIFT] with its calibrated largest probability <= 2^-s: the head's
    uint8 probabilities get 2^s times the levels. At 1/255 alone, a head that spreads its attention over
    more than 510 tokens (384 px and up, or any broad head) would round every probability to 0."""
    top = np.maximum(site.absmax.astype(np.float64), 1e-30)
    return tuple(int(s) for s in np.clip(np.floor(-np.log2(top)), 0, MAX_PROB_SHIFT))


def _optional_norm(module) -> QLayerNorm | None:
    """The QLayerNorm of a LayerNorm, None for an nn.Identity (the architecture check allows only these)."""
    return _layer_norm(module) if hasattr(module, "weight") else None


def _embedding_rows(model) -> tuple[np.ndarray, np.ndarray]:
    """(prefix rows [P, C], what is added to each patch row [patches, C]), as timm's own `_pos_embed` makes
    them: it is affine in the patch tokens, so zero patches give the class / register / distillation tokens
    with whatever position embedding they get, and each patch's position embedding (with or without the
    class token's, DeiT III and DINOv2's registers included)."""
    import torch

    with torch.no_grad():
        rows = _np(model._pos_embed(torch.zeros(1, model.patch_embed.num_patches, model.embed_dim))[0])
    return rows[: model.num_prefix_tokens].copy(), rows[model.num_prefix_tokens:].copy()


def _qk_norm(attn, site) -> QKNorm | None:
    """q/k LayerNorms with the power-of-two scales of their (pre-norm) inputs; None without q/k norm."""
    q, k = _optional_norm(attn.q_norm), _optional_norm(attn.k_norm)
    if q is None:
        return None
    pre = tuple(2.0 ** -_residual_exponent(site(part).tensor_absmax) for part in "qk")
    return QKNorm(q, k, pre)


def quantize_vit(model, stats: dict[str, SiteStats], config: QuantConfig, schedule: list[int],
                 mean, std) -> QuantizedViT:
    """The QuantizedViT of a (float, unpatched) timm ViT from its calibration statistics."""
    blocks = []
    for i, block in enumerate(model.blocks):
        site = lambda name, i=i: stats[f"blocks.{i}.{name}"]  # noqa: E731
        qkv = _ln_input_linear(f"blocks.{i}.qkv", *_linear_params(block.attn.qkv), site("ln1"), config)
        qk_norm = _qk_norm(block.attn, site)
        parts = ("q_normed", "k_normed", "v") if qk_norm else ("q", "k", "v")
        qkv_scales = tuple(_tensor_scale(site(part), config.observer) for part in parts)
        proj_scale = _tensor_scale(site("attn_out"), config.observer)
        dim = block.attn.proj.in_features
        proj = _linear(f"blocks.{i}.proj", *_branch_params(block.attn.proj, block.ls1), np.full(dim, proj_scale, np.float32),
                       proj_scale, [(0, dim, 0)], config, site("attn_out").sample_rows(), site("attn_out").gram)
        order, fc2 = _fc2_groups(_branch_params(block.mlp.fc2, block.ls2), site("fc2_in"), config, i)
        w1, b1 = _linear_params(block.mlp.fc1)
        fc1 = _ln_input_linear(f"blocks.{i}.fc1", w1[:, order], b1[order], site("ln2"), config)
        activation = "quick_gelu" if type(block.mlp.act).__name__ == "QuickGELU" else "gelu"
        blocks.append(QBlock(_layer_norm(block.norm1), qkv, qkv_scales, proj, _layer_norm(block.norm2), fc1, fc2,
                             schedule[i], activation, qk_norm, prob_shifts(site("probs"))))
    head_modules = [model.head] + ([model.head_dist] if getattr(model, "head_dist", None) is not None else [])
    heads = [_ln_input_linear(name, *_head_params(m, model.embed_dim), stats["head_in"], config)
             for name, m in zip(("head", "head_dist"), head_modules)]
    prefix, pos = _embedding_rows(model)
    pool = model.global_pool
    residual_max = stats["residual"].tensor_absmax
    qvit = QuantizedViT(
        mode=config.mode, image_size=model.patch_embed.img_size[0], patch_size=model.patch_embed.patch_size[0],
        num_heads=model.blocks[0].attn.num_heads, patch=_patch_linear(model, config, mean, std, stats["patch_in"]),
        prefix=prefix, pos=pos, blocks=blocks, norm=_layer_norm(model.fc_norm if pool == "avg" else model.norm),
        heads=heads, residual_scale=2.0 ** -_residual_exponent(residual_max), recipe=config.summary(),
        norm_pre=_optional_norm(model.norm_pre), pool=pool,
    )
    return qvit


RESIDUAL_BITS = 20  # calibrated |x| max -> 2^20: 2^10 headroom in int32 (ToMe sums up to ~200 tokens)


def _residual_exponent(residual_max: float) -> int:
    """R with residual_max * 2^R <= 2^RESIDUAL_BITS: the int32 residual stream's scale is 2^-R
    (kept in [0, 24] so that a degenerate or huge range still gives usable multipliers)."""
    if residual_max <= 0:
        return RESIDUAL_BITS
    return min(24, max(0, int(math.floor(RESIDUAL_BITS - math.log2(residual_max)))))
