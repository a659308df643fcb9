"""The float numerics: a float32 residual stream, LayerNorm, softmax and GELU in float (fp32, and int8's
nonlinearities), around GEMMs of whichever format the layer table gives each layer (float32, float16 or int8).

An int8 GEMM's int32 accumulator is dequantized (one multiply-add per element with the folded scales) in its
epilogue, and its int8 input is produced by the op before it (LayerNorm, GELU, attention) with the quantization
folded in; FuseOps puts these elementwise steps into the kernels around the matmuls. A block's attention is
float32 (q @ k^T and p @ v as float matmuls, the layout PyTorch's export gave them) or int8 (int8 q, k, v read
as views of qkv, uint8 probabilities at a scale per head).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from compile.graph.emitter import Emitter
from compile.graph.gemm import gemm_formats
from compile.kernels import MergedHeads
from compile.kernels.row_kernels import emit_float_layer_norm, emit_float_softmax
from compile.model.vit import Block, LayerNorm, Linear, ViT
from compile.quant import integer_params as P
from compile.quant.formats import FLOAT32, LayerFormats
from compile.quant.scales import QLinear, QuantizedViT


class FloatNumerics:
    """The Numerics of every graph with a float residual stream (see compile.graph.builder.Numerics)."""

    integer_only = False

    def __init__(self, em: Emitter, vit: ViT, formats: LayerFormats, quant: QuantizedViT | None):
        self.em = em
        self.vit = vit
        self.formats = formats
        self.quant = quant
        self.gemms = gemm_formats(em, quant)

    # -- helpers ---------------------------------------------------------------------------------
    def _input(self, linear: Linear) -> QLinear | None:
        """The QLinear whose int8 input `linear` reads, None where it reads float32."""
        return self.gemms[self.formats[linear.name]].input_quantization(linear)

    def _scale_round(self, x: relax.Expr, mul, lo: int, hi: int, dtype: str) -> relax.Expr:
        """dtype(clip(round(x * mul), lo, hi)) with x cast to float32 first."""
        em = self.em
        if x.ty.dtype != "float32":
            x = em.emit(relax.op.astype(x, "float32"))
        y = em.emit(relax.op.multiply(x, em.const(mul, "float32")))
        y = em.emit(relax.op.clip(relax.op.round(y), lo, hi))
        return em.emit(relax.op.astype(y, dtype))

    def _quantize(self, x: relax.Expr, linear: QLinear | None) -> relax.Expr:
        return x if linear is None else self._scale_round(x, 1.0 / linear.input_scale, *linear.input_range, "int8")

    def _layer_norm(self, x: relax.Expr, norm: LayerNorm, quantize_for: QLinear | None = None) -> relax.Expr:
        """LayerNorm over the last axis, quantized to `quantize_for`'s int8 input when given."""
        em = self.em
        if em.cpu:  # one row kernel, the quantization folded in
            shape = em.shape(x)
            rows = x if len(shape) == 2 else em.emit(relax.op.reshape(x, (-1, shape[-1])))
            quantize = None if quantize_for is None else (1.0 / quantize_for.input_scale.astype(np.float64),
                                                          *quantize_for.input_range)
            y = emit_float_layer_norm(em, rows, norm.gamma, norm.beta, norm.eps, quantize)
            return y if len(shape) == 2 else em.emit(relax.op.reshape(y, shape))
        h = em.emit(relax.op.nn.layer_norm(x, em.const(norm.gamma), em.const(norm.beta), axes=[-1], epsilon=norm.eps))
        return self._quantize(h, quantize_for)

    # -- Numerics --------------------------------------------------------------------------------
    def embed(self, patch_out: relax.Expr) -> relax.Expr:
        em = self.em
        x = em.emit(relax.op.add(patch_out, em.const(self.vit.pos)))
        x = em.emit(relax.op.concat([em.const(self.vit.prefix), x], axis=0))
        return x if self.vit.norm_pre is None else self._layer_norm(x, self.vit.norm_pre)

    def norm_for(self, x: relax.Expr, norm: LayerNorm | None, linear: Linear) -> relax.Expr:
        if norm is None:
            return self._quantize(x, self._input(linear))
        return self._layer_norm(x, norm, self._input(linear))

    def norm_rows(self, x: relax.Expr, norm: LayerNorm) -> relax.Expr:
        return self._layer_norm(x, norm)

    def linear(self, x: relax.Expr, linear: Linear, x_view: MergedHeads | None = None) -> relax.Expr:
        return self.gemms[self.formats[linear.name]].dense(x, linear, x_view)

    def qkv_values(self, y: relax.Expr, block: Block) -> relax.Expr:
        """qkv's output [N, 3C] as the attention reads it: q and k through the q/k norm, int8 for int8 attention."""
        em = self.em
        tokens, width = em.shape(y)
        width //= 3
        if block.q_norm is not None:  # LayerNorm over each head's q and k
            heads = self.vit.num_heads
            parts = [em.rows(y, j * width, (j + 1) * width, axis=1) for j in range(3)]
            for j, norm in enumerate((block.q_norm, block.k_norm)):
                per_head = em.emit(relax.op.reshape(parts[j], (tokens, heads, width // heads)))
                parts[j] = em.emit(relax.op.reshape(self._layer_norm(per_head, norm), (tokens, width)))
            y = em.emit(relax.op.concat(parts, axis=1))
        if self.formats[block.attention] == FLOAT32:
            return y
        scales = self.quant.blocks[block.index].qkv_scales
        inv = np.repeat(1.0 / np.asarray(scales, np.float64), width).astype(np.float32)
        return self._scale_round(y, inv, -127, 127, "int8")

    def attention(self, qkv: relax.Expr, block: Block, size: relax.Expr | None,
                  queries: int | None) -> tuple[relax.Expr, MergedHeads | None]:
        """(proj's input, the view proj reads it through) of the attention over qkv_values' output; queries: only
        the first Q tokens ask (the last block of a token-pooled model), else all."""
        if self.formats[block.attention] == FLOAT32:
            return self._float_attention(qkv, block, size, queries)
        return self._int8_attention(qkv, block, size, queries)

    def _float_attention(self, qkv: relax.Expr, block: Block, size: relax.Expr | None, queries: int | None):
        em = self.em
        tokens, width = em.shape(qkv)
        heads = self.vit.num_heads
        dim = width // 3 // heads
        parts = em.emit(relax.op.permute_dims(relax.op.reshape(qkv, (tokens, 3, heads, dim)), [1, 2, 0, 3]))
        q, k, v = (em.emit(relax.op.squeeze(em.rows(parts, j, j + 1), [0])) for j in range(3))
        if queries is not None:
            q = em.rows(q, 0, queries, axis=1)
        logits = em.emit(relax.op.matmul(q, em.emit(relax.op.permute_dims(k, [0, 2, 1]))))
        o = em.emit(relax.op.matmul(self._softmax(logits, dim**-0.5, size), v))  # [heads, Q, D]
        proj = self._input(block.proj)
        if proj is None:
            return o, MergedHeads()
        return self._quantize(MergedHeads().relax(em.bb, o), proj), None

    def _int8_attention(self, qkv: relax.Expr, block: Block, size: relax.Expr | None, queries: int | None):
        em = self.em
        qblock = self.quant.blocks[block.index]
        scale = P.logit_scale(qblock, self.vit.num_heads)
        levels = 1.0 / qblock.prob_scales(self.vit.num_heads)
        o = em.attend_int8(qkv, self.vit.num_heads, queries, lambda logits: self._softmax(logits, scale, size, levels))
        real = qblock.prob_scales(self.vit.num_heads) * qblock.qkv_scales[2]
        proj = self._input(block.proj)
        if proj is None:
            return em.emit(relax.op.multiply(em.emit(relax.op.astype(o, "float32")), em.const(real, "float32"))), \
                MergedHeads()
        return self._scale_round(o, real / proj.input_base, -127, 127, "int8"), MergedHeads()

    def _softmax(self, logits: relax.Expr, scale: float, size: relax.Expr | None, levels=None) -> relax.Expr:
        """softmax(logits * scale + log(size)) over the keys (proportional attention), of int32 or float32 logits:
        float32, or uint8 at `levels` (each head's 1 / probability scale) for int8's p @ v."""
        em = self.em
        if em.cpu:
            log2_size = None if size is None else em.emit(relax.op.reshape(
                relax.op.multiply(relax.op.log(size), em.const(np.log2(np.e), "float32")), (em.shape(size)[0],)))
            return emit_float_softmax(em, logits, float(scale), log2_size, levels)
        if logits.ty.dtype != "float32":
            logits = em.emit(relax.op.astype(logits, "float32"))
        z = em.emit(relax.op.multiply(logits, em.const(scale, "float32")))
        if size is not None:  # proportional attention: + log(size) of each key token
            tokens = em.shape(size)[0]
            z = em.emit(relax.op.add(z, em.emit(relax.op.reshape(relax.op.log(size), (1, 1, tokens)))))
        p = em.emit(relax.op.nn.softmax(z, axis=-1))
        return p if levels is None else self._scale_round(p, levels, 0, 255, "uint8")

    def residual_add(self, x: relax.Expr, y: relax.Expr, linear: Linear) -> relax.Expr:
        return self.em.emit(relax.op.add(x, y))

    def mlp_hidden(self, y: relax.Expr, block: Block) -> relax.Expr:
        em = self.em
        if block.activation == "quick_gelu":
            g = em.emit(relax.op.multiply(y, relax.op.sigmoid(relax.op.multiply(y, em.const(1.702, "float32")))))
        else:
            g = em.emit(relax.op.nn.gelu(y))
        return self._quantize(g, self._input(block.fc2))

    def mean_rows(self, x: relax.Expr, start: int) -> relax.Expr:
        em = self.em
        return em.emit(relax.op.mean(em.rows(x, start, em.shape(x)[0]), axis=0, keepdims=True))

    def head_logits(self, y: relax.Expr, head: Linear) -> relax.Expr:
        return y  # already real-valued
