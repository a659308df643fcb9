"""The integer ViT as a Relax module: one graph, two numerics (int8: float nonlinearities; int8-full).

The graph structure (patches, blocks, ToMe, heads) is written once here; what happens between
the integer matmuls is delegated to a `Numerics` object (compile.quant.float_numerics /
compile.quant.integer_numerics). Every matmul goes through compile.kernels, so each target's
integer kernels stay behind one interface. Batch 1: activations are [tokens, channels].
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import tvm
from tvm import relax
from tvm.target import Target

from compile.kernels import HeadView, MergedHeads, emit_int8_batch_matmul, emit_int8_dense
from compile.quant.qvit import QBlock, QLayerNorm, QLinear, QuantizedViT
from compile.quant.tome_graph import match_tokens
from compile.quant.tome_kernels import emit_merge


class Emitter:
    """A Relax BlockBuilder with the few helpers both numerics need."""

    def __init__(self, bb: relax.BlockBuilder, target: Target):
        self.bb = bb
        self.target = target

    def emit(self, expr: relax.Expr) -> relax.Expr:
        return self.bb.emit(expr)

    def const(self, value, dtype: str | None = None) -> relax.Expr:
        array = np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
        return relax.const(array, str(array.dtype)) if array.ndim else relax.const(array.item(), str(array.dtype))

    def rows(self, x: relax.Expr, start: int, stop: int, axis: int = 0, step: int = 1) -> relax.Expr:
        return self.emit(relax.op.strided_slice(x, [axis], [start], [stop], [step]))

    def shape(self, x: relax.Expr) -> tuple[int, ...]:
        return tuple(int(d) for d in x.ty.shape)

    def int8_accumulate(self, x: relax.Expr, linear: QLinear, x_view: MergedHeads | None = None) -> relax.Expr:
        """acc [N, out] int32 = sum over segments of (x[:, seg] @ weight[seg]) << shift (x read through x_view)."""
        acc = None
        for start, stop, shift in linear.segments:
            part = emit_int8_dense(self.bb, x, linear.weight[start:stop], self.target, x_columns=(start, stop),
                                   x_view=x_view)
            if shift:
                part = self.emit(relax.op.left_shift(part, self.const(shift, "int32")))
            acc = part if acc is None else self.emit(relax.op.add(acc, part))
        return acc

    def batch_matmul(self, a: relax.Expr, b: relax.Expr, transpose_b: bool = False, a_view: HeadView | None = None,
                     b_view: HeadView | None = None) -> relax.Expr:
        return emit_int8_batch_matmul(self.bb, a, b, self.target, transpose_b, a_view, b_view)


class Numerics(Protocol):
    """What happens between the integer matmuls: the float (int8) or integer-only (int8-full) way.

    "Residual" values are the residual stream in the numerics' own representation (float32, or int32
    at a power-of-two scale); "linear outputs" are what `linear` returns (float y, or int32 acc + bias).
    """

    integer_only: bool  # no float arithmetic before the logits (int8-full)

    def embed(self, patch_out: relax.Expr) -> relax.Expr: ...
    def norm_for(self, x: relax.Expr, norm: QLayerNorm, linear: QLinear) -> relax.Expr: ...
    def linear(self, x: relax.Expr, linear: QLinear, x_view: MergedHeads | None = None) -> relax.Expr: ...
    def qkv_int8(self, y: relax.Expr, block: QBlock) -> relax.Expr: ...
    def attention_probs(self, logits: relax.Expr, block: QBlock, size: relax.Expr | None) -> relax.Expr: ...
    def attention_out(self, o: relax.Expr, block: QBlock) -> relax.Expr: ...
    def residual_add(self, x: relax.Expr, y: relax.Expr, linear: QLinear) -> relax.Expr: ...
    def mlp_hidden(self, y: relax.Expr, block: QBlock) -> relax.Expr: ...
    def mean_rows(self, x: relax.Expr, start: int) -> relax.Expr: ...
    def head_logits(self, y: relax.Expr, head: QLinear) -> relax.Expr: ...


def _patches(em: Emitter, pixels: relax.Expr, image: int, patch: int) -> relax.Expr:
    """uint8 [1, 3, H, W] -> [patches, 3 * p * p] in the conv weight's (channel, row, column) order."""
    g = image // patch
    x = em.emit(relax.op.reshape(pixels, (3, g, patch, g, patch)))
    x = em.emit(relax.op.permute_dims(x, [1, 3, 0, 2, 4]))
    return em.emit(relax.op.reshape(x, (g * g, 3 * patch * patch)))


def _attention(em: Emitter, num: Numerics, h: relax.Expr, block: QBlock, heads: int, size,
               queries: int | None = None) -> tuple:
    """Multi-head self-attention up to proj's input; returns (proj input [heads, Q, D], int8 qkv [N, 3C]).

    q, k and v are read as head views of qkv by the matmuls themselves (no copies of them). queries: only the
    first Q tokens ask (the last block of a token-pooled model, whose later rows nobody reads), else all N."""
    qkv = num.qkv_int8(num.linear(h, block.qkv), block)  # int8 [N, 3C]
    q, k, v = (HeadView(part, 3, heads) for part in range(3))
    asking = qkv if queries is None else em.rows(qkv, 0, queries)
    logits = em.batch_matmul(asking, qkv, transpose_b=True, a_view=q, b_view=k)
    probs = num.attention_probs(logits, block, size)  # uint8 [heads, Q, N]
    return num.attention_out(em.batch_matmul(probs, qkv, b_view=v), block), qkv


def _mean(em: Emitter, values: list[relax.Expr]) -> relax.Expr:
    """The mean of the heads' logits (distilled models have two heads; one head is returned as it is)."""
    out = values[0]
    for value in values[1:]:
        out = em.emit(relax.op.add(out, value))
    return out if len(values) == 1 else em.emit(relax.op.multiply(out, em.const(1.0 / len(values), "float32")))


def emit_quantized_vit(qvit: QuantizedViT, numerics_cls, target: Target) -> tvm.IRModule:
    """main(x: uint8 [1, 3, H, W]) -> float32 logits [1, classes]."""
    bb = relax.BlockBuilder()
    pixels = relax.Var("x", relax.TensorType((1, 3, qvit.image_size, qvit.image_size), "uint8"))
    em = Emitter(bb, target)
    num: Numerics = numerics_cls(em, qvit)
    with bb.function("main", [pixels]):
        with bb.dataflow():
            x = num.embed(num.linear(_patches(em, pixels, qvit.image_size, qvit.patch_size), qvit.patch))
            size = None
            for index, block in enumerate(qvit.blocks):
                # the last block of a token-pooled model: only the heads' rows are read after it, and every step
                # but attention's keys and values is row-wise, so they alone ask, take the residual and the MLP;
                # its merge would change nothing read (prefix tokens are protected: never merged; the class token
                # stays the first row)
                read_rows = len(qvit.heads) if index == len(qvit.blocks) - 1 and qvit.pool == "token" else None
                attn_in = num.norm_for(x, block.ln1, block.qkv)
                o, qkv = _attention(em, num, attn_in, block, qvit.num_heads, size, read_rows)
                if read_rows is not None:
                    x = em.rows(x, 0, read_rows)
                x = num.residual_add(x, num.linear(o, block.proj, MergedHeads()), block.proj)
                if block.tome_r and read_rows is None:
                    dest = match_tokens(em, qkv, qvit.num_heads, block.tome_r, qvit.num_prefix, num.integer_only)
                    x, size = emit_merge(em, x, size, dest, block.tome_r)
                hidden = num.mlp_hidden(num.linear(num.norm_for(x, block.ln2, block.fc1), block.fc1), block)
                x = num.residual_add(x, num.linear(hidden, block.fc2), block.fc2)
            pooled = ([em.rows(x, i, i + 1) for i in range(len(qvit.heads))] if qvit.pool == "token"
                      else [num.mean_rows(x, qvit.num_prefix)])
            logits = [num.head_logits(num.linear(num.norm_for(rows, qvit.norm, head), head), head)
                      for rows, head in zip(pooled, qvit.heads)]
            out = bb.emit_output(_mean(em, logits))
        bb.emit_func_output(out)
    return bb.get()
