"""The one ViT graph: every precision as a Relax module, from one description (compile.model.vit).

The structure (patches, blocks, ToMe, pooling, heads) is written once here; each GEMM layer is emitted in the
format the layer table gives it (compile.quant.formats, compile.graph.gemm), and what happens between the GEMMs
is delegated to a `Numerics`: the float one (fp32, int8) or the integer-only one (int8-full). ToMe is emitted
here for every numerics with the same kernels (compile.graph.tome). Batch 1: activations are [tokens, channels].
"""

from __future__ import annotations

from typing import Protocol

import tvm
from tvm import relax
from tvm.target import Target

from compile.graph.emitter import Emitter
from compile.graph.float_numerics import FloatNumerics
from compile.graph.integer_numerics import IntegerNumerics
from compile.graph.tome import match_tokens
from compile.kernels import MergedHeads
from compile.kernels.tome_kernels import emit_merge
from compile.model.vit import Block, LayerNorm, Linear, ViT
from compile.quant.formats import LayerFormats
from compile.quant.scales import QuantizedViT


class Numerics(Protocol):
    """What happens between the GEMMs: the float way (FloatNumerics) or the integer-only one (IntegerNumerics).

    "Residual" values are the residual stream in the numerics' own representation (float32, or int32 at a
    power-of-two scale); "linear outputs" are what `linear` returns (float y, or int32 acc + bias)."""

    integer_only: bool  # no float arithmetic before the outputs (int8-full)

    def embed(self, patch_out: relax.Expr) -> relax.Expr: ...
    def norm_for(self, x: relax.Expr, norm: LayerNorm | None, linear: Linear) -> relax.Expr: ...
    def norm_rows(self, x: relax.Expr, norm: LayerNorm) -> relax.Expr: ...
    def linear(self, x: relax.Expr, linear: Linear, x_view: MergedHeads | None = None) -> relax.Expr: ...
    def qkv_values(self, y: relax.Expr, block: Block) -> relax.Expr: ...
    def attention(self, qkv: relax.Expr, block: Block, size: relax.Expr | None,
                  queries: int | None) -> tuple[relax.Expr, MergedHeads | None]: ...
    def residual_add(self, x: relax.Expr, y: relax.Expr, linear: Linear) -> relax.Expr: ...
    def mlp_hidden(self, y: relax.Expr, block: Block) -> relax.Expr: ...
    def mean_rows(self, x: relax.Expr, start: int) -> relax.Expr: ...
    def head_logits(self, y: relax.Expr, head: Linear) -> relax.Expr: ...


def _patches(em: Emitter, pixels: relax.Expr, image: int, patch: int) -> relax.Expr:
    """[1, 3, H, W] -> [patches, 3 * p * p] in the conv weight's (channel, row, column) order."""
    g = image // patch
    x = em.emit(relax.op.reshape(pixels, (3, g, patch, g, patch)))
    x = em.emit(relax.op.permute_dims(x, [1, 3, 0, 2, 4]))
    return em.emit(relax.op.reshape(x, (g * g, 3 * patch * patch)))


def _block(em: Emitter, num: Numerics, vit: ViT, block: Block, x: relax.Expr, size, last: bool):
    """One block: (residual stream, token sizes) after it.

    The last block of a token-pooled model: only the heads' rows are read after it, and every step but attention's
    keys and values is row-wise, so they alone ask, take the residual and the MLP; its merge would change nothing
    read (prefix tokens are protected: never merged; the class token stays the first row)."""
    read_rows = len(vit.heads) if last and vit.pool == "token" else None
    qkv = num.qkv_values(num.linear(num.norm_for(x, block.ln1, block.qkv), block.qkv), block)
    o, view = num.attention(qkv, block, size, read_rows)
    if read_rows is not None:
        x = em.rows(x, 0, read_rows)
    x = num.residual_add(x, num.linear(o, block.proj, view), block.proj)
    if block.tome_r and read_rows is None:
        dest = match_tokens(em, qkv, vit.num_heads, block.tome_r, vit.num_prefix, num.integer_only)
        x, size = emit_merge(em, x, size, dest, block.tome_r)
    hidden = num.mlp_hidden(num.linear(num.norm_for(x, block.ln2, block.fc1), block.fc1), block)
    return num.residual_add(x, num.linear(hidden, block.fc2), block.fc2), size


def _outputs(em: Emitter, num: Numerics, vit: ViT, x: relax.Expr) -> relax.Expr:
    """The heads on the pooled rows (their mean: distilled models have two heads; one is returned as it is)."""
    norm = vit.final_norm
    if vit.pool == "token":  # a LayerNorm of every row, then the head rows, is the LayerNorm of the head rows
        pooled = [em.rows(x, i, i + 1) for i in range(len(vit.heads))]
    else:
        if norm is not None and vit.norm_rows:
            x, norm = num.norm_rows(x, norm), None
        pooled = [num.mean_rows(x, vit.num_prefix)]
    outs = [num.head_logits(num.linear(num.norm_for(rows, norm, head), head), head)
            for rows, head in zip(pooled, vit.heads)]
    out = outs[0]
    for value in outs[1:]:
        out = em.emit(relax.op.add(out, value))
    return out if len(outs) == 1 else em.emit(relax.op.multiply(out, em.const(1.0 / len(outs), "float32")))


def emit_graph(vit: ViT, formats: LayerFormats, quant: QuantizedViT | None, target: Target) -> tvm.IRModule:
    """main(x [1, 3, H, W]: uint8 pixels, or normalized float32 ones where the patch embedding is float32) ->
    float32 outputs [1, classes or embed_dim]; `quant`: the parameters of the quantized layers (None: fp32)."""
    bb = relax.BlockBuilder()
    pixels = relax.Var("x", relax.TensorType((1, 3, vit.image_size, vit.image_size), formats.input_dtype(vit)))
    em = Emitter(bb, target)
    num: Numerics = (IntegerNumerics if formats.integer_only else FloatNumerics)(em, vit, formats, quant)
    with bb.function("main", [pixels]):
        with bb.dataflow():
            x = num.embed(num.linear(_patches(em, pixels, vit.image_size, vit.patch_size), vit.patch))
            size = None
            for block in vit.blocks:
                x, size = _block(em, num, vit, block, x, size, last=block.index == len(vit.blocks) - 1)
            out = bb.emit_output(_outputs(em, num, vit, x))
        bb.emit_func_output(out)
    return bb.get()
