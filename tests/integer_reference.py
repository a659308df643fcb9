"""A pure numpy reference of the int8-full integer graph, step by step, for bit-exact comparison.

It reads the QuantizedViT (with the description it belongs to) and the integer constants
(compile.quant.integer_params), and re-implements every operation of compile.graph.integer_numerics / builder /
tome on int64 numpy arrays: no TVM, no shared op code, but ToMe's matching and merge are PyTorch's ToMe
(compile.model.tome, the one ToMe reference) on the integer scores. Matmuls use float64 BLAS, which is exact here
(every sum stays far below 2^53).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from compile.graph.tome import INVERSE_BITS, UNIT_BITS
from compile.model.tome import Merge, match
from compile.model.vit import Block
from compile.quant import integer_params as P
from compile.quant.scales import QBlock, QLinear, QuantizedViT


def shift_round(x: np.ndarray, shift) -> np.ndarray:
    """(x + 2^(shift-1)) >> shift, arithmetic shift on int64."""
    shift = np.asarray(shift, dtype=np.int64)
    return (x + (np.int64(1) << (shift - 1))) >> shift


def requant(x: np.ndarray, req: P.Requant, low: int, high: int) -> np.ndarray:
    return np.clip(shift_round(x.astype(np.int64) * req.mult, req.shift), low, high)


def imatmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer matmul (batched) through float64."""
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def isqrt(values: np.ndarray) -> np.ndarray:
    return np.array([math.isqrt(int(v)) for v in values.ravel()], dtype=np.int64).reshape(values.shape)


def linear(x: np.ndarray, layer: QLinear) -> np.ndarray:
    acc = np.zeros((x.shape[0], layer.weight.shape[1]), dtype=np.int64)
    for start, stop, shift in layer.segments:
        acc += imatmul(x[:, start:stop], layer.weight[start:stop]) << shift
    return acc + P.bias_int(layer)


def layer_norm(x: np.ndarray, params: P.LayerNormParams) -> np.ndarray:
    c = x.shape[1]
    total = x.sum(axis=1, keepdims=True)
    mean = (2 * total + c) // (2 * c)
    d = x - mean
    var = (d * d).sum(axis=1, keepdims=True) // c + params.eps
    std = np.maximum(isqrt(var), 1)
    inv = (np.int64(1) << P.NORM_INV_BITS) // std
    z = shift_round(d * inv, P.NORM_INV_BITS - P.NORM_FRAC)
    y = shift_round(z * params.gamma + params.beta, params.shift)
    return np.clip(y, params.low, params.high)


def exp2_negative(u: np.ndarray) -> np.ndarray:
    """2^-u in Q15 for u >= 0 in Q15."""
    u = np.minimum(u, P.EXP_MIN << P.EXP_FRAC)
    whole, frac = u >> P.EXP_FRAC, u & ((1 << P.EXP_FRAC) - 1)
    c1, c2 = P.exp2_poly()
    poly = shift_round(frac * c1, P.EXP_FRAC) + shift_round(shift_round(frac * frac, P.EXP_FRAC) * c2, P.EXP_FRAC)
    return (poly + (1 << P.EXP_FRAC)) >> whole


def softmax(logits: np.ndarray, block: QBlock, heads: int, log_size: np.ndarray | None) -> np.ndarray:
    return integer_softmax(logits, P.softmax_exponent(block, heads), P.prob_levels(block, heads), log_size)


def integer_softmax(logits: np.ndarray, exponent: P.Requant, levels: np.ndarray,
                    log_size: np.ndarray | None) -> np.ndarray:
    """uint8-valued probabilities [heads, N, N]; levels [heads, 1, 1]: 1 / each head's probability scale."""
    z = logits if log_size is None else logits + log_size[None, None, :]
    d = z - z.max(axis=-1, keepdims=True)
    e = exp2_negative(-shift_round(d * exponent.mult, exponent.shift))
    inv = (np.int64(1) << P.PROB_RECIP_BITS) // e.sum(axis=-1, keepdims=True)
    return np.clip(shift_round(e * levels * inv, P.PROB_RECIP_BITS), 0, 255)


def gelu(g: np.ndarray) -> np.ndarray:
    """GELU with I-BERT's second-order erf, Q12 in and out."""
    u = shift_round(np.abs(g) * P.INV_SQRT2, 15)
    c = np.minimum(u, P.ERF_B) - P.ERF_B
    magnitude = shift_round(shift_round(c * c, P.GELU_FRAC) * P.ERF_A, 15) + (1 << P.GELU_FRAC)
    erf = np.where(g < 0, -magnitude, magnitude)
    return shift_round(g * (erf + (1 << P.GELU_FRAC)), P.GELU_FRAC + 1)


def quick_gelu(g: np.ndarray) -> np.ndarray:
    """g * sigmoid(1.702 g), Q12 in and out."""
    e = exp2_negative(shift_round(np.abs(g) * P.QUICK_GELU_EXP, P.GELU_FRAC))
    sigmoid = (np.int64(1) << (2 * P.EXP_FRAC)) // (e + (1 << P.EXP_FRAC))
    sigmoid = np.where(g < 0, (1 << P.EXP_FRAC) - sigmoid, sigmoid)
    return shift_round(g * sigmoid, P.EXP_FRAC)


def activation_to_int8(y: np.ndarray, qblock: QBlock, activation: str) -> np.ndarray:
    """The block's activation in Q12, then fc2's int8 input."""
    g = requant(y, P.gelu_in(qblock.fc1), -P.GELU_CLAMP, P.GELU_CLAMP)
    out = quick_gelu(g) if activation == "quick_gelu" else gelu(g)
    return requant(out, P.gelu_out(qblock.fc2)[0], -127, 127)


def qkv_to_int8(y: np.ndarray, block: Block, qblock: QBlock, heads: int) -> np.ndarray:
    """int8 q, k, v; with a q/k norm, q and k go to their pre-norm scale, then through the per-head LayerNorm."""
    if block.q_norm is None:
        return requant(y, P.qkv_requant(qblock), -127, 127)
    n, width = y.shape[0], y.shape[1] // 3
    parts = []
    for j, (req, params) in enumerate(zip(P.qk_norm_in(qblock), P.qk_layer_norms(block, qblock))):
        pre = requant(y[:, j * width:(j + 1) * width], req, -P.RESIDUAL_CLAMP, P.RESIDUAL_CLAMP)
        parts.append(layer_norm(pre.reshape(n * heads, width // heads), params).reshape(n, width))
    parts.append(requant(y[:, 2 * width:], P.v_requant(qblock), -127, 127))
    return np.concatenate(parts, axis=1)


def unit_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The int8 unit vectors of the A (even) and B (odd) tokens' keys summed over heads (keys [heads, N, D])."""
    ksum = keys.astype(np.int64).sum(axis=0)
    norm = np.maximum(isqrt((ksum * ksum).sum(axis=1, keepdims=True)), 1)
    inverse = (np.int64(1) << INVERSE_BITS) // norm
    unit = np.clip((ksum * inverse) >> (INVERSE_BITS - UNIT_BITS), -127, 127)
    return unit[0::2], unit[1::2]


def matching(keys: np.ndarray, r: int, protected: int) -> Merge:
    """PyTorch's ToMe merge (compile.model.tome) on the integer cosine scores of int8 keys [heads, N, D]."""
    a, b = unit_keys(keys)
    return match(torch.from_numpy(imatmul(a, b.T))[None], r, protected)


def tome_destinations(keys: np.ndarray, r: int, protected: int) -> np.ndarray:
    """The output row of every token after merging (tome_merge's row layout)."""
    tokens = keys.shape[1]
    return matching(keys, r, protected)(torch.eye(tokens, dtype=torch.int64)[None])[0].argmax(dim=0).numpy()


def tome_sums(keys: np.ndarray, t: np.ndarray, r: int, protected: int) -> np.ndarray:
    """t [N, C] summed into the output rows of bipartite soft matching on int8 keys [heads, N, D]."""
    return matching(keys, r, protected)(torch.from_numpy(t)[None])[0].numpy()


def tome_merge(keys: np.ndarray, x: np.ndarray, size: np.ndarray, r: int, protected: int):
    """Bipartite soft matching on int8 keys [heads, N, D], integer size-weighted merge of x [N, C]."""
    total, size = tome_sums(keys, x * size, r, protected), tome_sums(keys, size, r, protected)
    return (2 * total + size) // (2 * size), size


def run(qvit: QuantizedViT, pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels [1, 3, H, W] -> float32 logits [1, classes], exactly as int8-full computes them."""
    vit = qvit.vit
    p, g = vit.patch_size, vit.image_size // vit.patch_size
    patches = pixels.reshape(3, g, p, g, p).transpose(1, 3, 0, 2, 4).reshape(g * g, 3 * p * p).astype(np.int64)
    prefix, pos = P.embedding(qvit)
    x = requant(linear(patches, qvit.patch), P.to_residual(qvit.patch, qvit), -P.RESIDUAL_CLAMP, P.RESIDUAL_CLAMP)
    x = np.concatenate([prefix, x + pos]).astype(np.int64)
    if vit.norm_pre is not None:
        x = layer_norm(x, P.residual_layer_norm(vit.norm_pre, qvit))
    size = None
    heads = vit.num_heads
    for block, qblock in zip(vit.blocks, qvit.blocks):
        h = layer_norm(x, P.layer_norm(block.ln1, qblock.qkv, qvit))
        qkv = qkv_to_int8(linear(h, qblock.qkv), block, qblock, heads)
        n, width = qkv.shape
        q, k, v = qkv.reshape(n, 3, heads, width // 3 // heads).transpose(1, 2, 0, 3)
        log_size = None if size is None else P.log_size_table(qblock, heads, vit.tokens)[size[:, 0]]
        probs = softmax(imatmul(q, k.transpose(0, 2, 1)), qblock, heads, log_size)
        o = requant(imatmul(probs, v), P.attention_out_requant(qblock, heads), -127, 127)
        o = o.transpose(1, 0, 2).reshape(n, width // 3)
        x = x + requant(linear(o, qblock.proj), P.to_residual(qblock.proj, qvit), -P.RESIDUAL_CLAMP, P.RESIDUAL_CLAMP)
        if block.tome_r:
            x, size = tome_merge(k, x, np.ones((n, 1), np.int64) if size is None else size, block.tome_r,
                                 vit.num_prefix)
        h = layer_norm(x, P.layer_norm(block.ln2, qblock.fc1, qvit))
        hidden = activation_to_int8(linear(h, qblock.fc1), qblock, block.activation)
        x = x + requant(linear(hidden, qblock.fc2), P.to_residual(qblock.fc2, qvit), -P.RESIDUAL_CLAMP,
                        P.RESIDUAL_CLAMP)
    if vit.pool == "avg":
        rows = len(x) - vit.num_prefix
        pooled = [(2 * x[vit.num_prefix:].sum(axis=0, keepdims=True) + rows) // (2 * rows)]
    else:
        pooled = [x[i:i + 1] for i in range(len(qvit.heads))]
    outs = []
    for rows_in, head in zip(pooled, qvit.heads):
        h = layer_norm(rows_in, P.layer_norm(vit.final_norm, head, qvit))
        outs.append(linear(h, head).astype(np.float32) * P.head_scale(head))
    out = outs[0]
    for y in outs[1:]:
        out = out + y
    if len(outs) > 1:
        out = out * np.float32(1.0 / len(outs))
    return out
