"""int8 numerics: integer GEMMs, float32 LayerNorm / softmax / GELU / residual stream.

Each int32 accumulator is dequantized (one multiply-add per element with the folded scales) in
the epilogue of its GEMM, and every GEMM input is quantized to int8 by the op before it; FuseOps
puts these elementwise steps into the kernels around the matmuls.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from compile.kernels import MergedHeads
from compile.quant.graph import Emitter
from compile.quant.qvit import QBlock, QLayerNorm, QLinear, QuantizedViT
from compile.quant.row_kernels import emit_float_layer_norm, emit_float_softmax


class FloatNumerics:
    """The Numerics of --quant int8 (see compile.quant.graph.Numerics)."""

    integer_only = False

    def __init__(self, em: Emitter, qvit: QuantizedViT):
        self.em = em
        self.qvit = qvit

    # -- helpers ---------------------------------------------------------------------------------
    def _scale_round(self, x: relax.Expr, mul, add, lo: int, hi: int, dtype: str) -> relax.Expr:
        """dtype(clip(round(x * mul + add), lo, hi)) with x cast to float32 first."""
        em = self.em
        if x.ty.dtype != "float32":
            x = em.emit(relax.op.astype(x, "float32"))
        y = em.emit(relax.op.multiply(x, em.const(mul, "float32")))
        if add is not None:
            y = em.emit(relax.op.add(y, em.const(add, "float32")))
        y = em.emit(relax.op.clip(relax.op.round(y), lo, hi))
        return em.emit(relax.op.astype(y, dtype))

    def _quantize(self, x: relax.Expr, linear: QLinear) -> relax.Expr:
        return self._scale_round(x, 1.0 / linear.input_scale, None, *linear.input_range, "int8")

    def _layer_norm(self, x: relax.Expr, norm: QLayerNorm, quantize_for: QLinear | None = None) -> relax.Expr:
        """LayerNorm over the last axis, quantized to `quantize_for`'s int8 input when given."""
        em = self.em
        if em.target.kind.name == "llvm":  # one row kernel, the quantization folded in
            shape = em.shape(x)
            rows = x if len(shape) == 2 else em.emit(relax.op.reshape(x, (-1, shape[-1])))
            quantize = None if quantize_for is None else (1.0 / quantize_for.input_scale.astype(np.float64),
                                                          *quantize_for.input_range)
            y = emit_float_layer_norm(em, rows, norm.gamma, norm.beta, norm.eps, quantize)
            return y if len(shape) == 2 else em.emit(relax.op.reshape(y, shape))
        h = em.emit(relax.op.nn.layer_norm(x, em.const(norm.gamma), em.const(norm.beta), axes=[-1], epsilon=norm.eps))
        return h if quantize_for is None else self._quantize(h, quantize_for)

    # -- Numerics --------------------------------------------------------------------------------
    def embed(self, patch_out: relax.Expr) -> relax.Expr:
        em = self.em
        x = em.emit(relax.op.add(patch_out, em.const(self.qvit.pos)))
        x = em.emit(relax.op.concat([em.const(self.qvit.prefix), x], axis=0))
        return x if self.qvit.norm_pre is None else self._layer_norm(x, self.qvit.norm_pre)

    def norm_for(self, x: relax.Expr, norm: QLayerNorm, linear: QLinear) -> relax.Expr:
        return self._layer_norm(x, norm, None if linear.kept_float else linear)

    def linear(self, x: relax.Expr, linear: QLinear, x_view: MergedHeads | None = None) -> relax.Expr:
        em = self.em
        if linear.kept_float:
            x = x if x_view is None else x_view.relax(em.bb, x)
            y = em.emit(relax.op.matmul(x, em.const(linear.float_weight)))
            return em.emit(relax.op.add(y, em.const(linear.bias)))
        acc = em.int8_accumulate(x, linear, x_view)
        y = em.emit(relax.op.multiply(em.emit(relax.op.astype(acc, "float32")), em.const(linear.acc_scale)))
        return em.emit(relax.op.add(y, em.const(linear.bias)))

    def qkv_int8(self, y: relax.Expr, block: QBlock) -> relax.Expr:
        em = self.em
        tokens, width = em.shape(y)
        width //= 3
        if block.qk_norm is not None:  # LayerNorm over each head's q and k
            heads = self.qvit.num_heads
            parts = [em.rows(y, j * width, (j + 1) * width, axis=1) for j in range(3)]
            for j, norm in enumerate((block.qk_norm.q, block.qk_norm.k)):
                per_head = em.emit(relax.op.reshape(parts[j], (tokens, heads, width // heads)))
                parts[j] = em.emit(relax.op.reshape(self._layer_norm(per_head, norm), (tokens, width)))
            y = em.emit(relax.op.concat(parts, axis=1))
        inv = np.repeat(1.0 / np.asarray(block.qkv_scales, np.float64), width).astype(np.float32)
        return self._scale_round(y, inv, None, -127, 127, "int8")

    def attention_probs(self, logits: relax.Expr, block: QBlock, size: relax.Expr | None) -> relax.Expr:
        em = self.em
        head_dim = block.qkv.weight.shape[1] // 3 // self.qvit.num_heads
        scale = block.qkv_scales[0] * block.qkv_scales[1] / np.sqrt(head_dim)
        levels = 1.0 / block.prob_scales(self.qvit.num_heads)
        if em.target.kind.name == "llvm":
            log2_size = None if size is None else em.emit(relax.op.reshape(
                relax.op.multiply(relax.op.log(size), em.const(np.log2(np.e), "float32")), (em.shape(size)[0],)))
            return emit_float_softmax(em, logits, float(scale), log2_size, levels)
        z = em.emit(relax.op.multiply(em.emit(relax.op.astype(logits, "float32")), em.const(scale, "float32")))
        if size is not None:  # proportional attention: + log(size) of each key token
            tokens = em.shape(size)[0]
            z = em.emit(relax.op.add(z, em.emit(relax.op.reshape(relax.op.log(size), (1, 1, tokens)))))
        p = em.emit(relax.op.nn.softmax(z, axis=-1))
        return self._scale_round(p, levels, None, 0, 255, "uint8")

    def attention_out(self, o: relax.Expr, block: QBlock) -> relax.Expr:
        em = self.em
        real = block.prob_scales(self.qvit.num_heads) * block.qkv_scales[2]
        if block.proj.kept_float:
            return em.emit(relax.op.multiply(em.emit(relax.op.astype(o, "float32")), em.const(real, "float32")))
        return self._scale_round(o, real / block.proj.input_base, None, -127, 127, "int8")

    def residual_add(self, x: relax.Expr, y: relax.Expr, linear: QLinear) -> relax.Expr:
        return self.em.emit(relax.op.add(x, y))

    def mlp_hidden(self, y: relax.Expr, block: QBlock) -> relax.Expr:
        em = self.em
        if block.activation == "quick_gelu":
            g = em.emit(relax.op.multiply(y, relax.op.sigmoid(relax.op.multiply(y, em.const(1.702, "float32")))))
        else:
            g = em.emit(relax.op.nn.gelu(y))
        return g if block.fc2.kept_float else self._quantize(g, block.fc2)

    def mean_rows(self, x: relax.Expr, start: int) -> relax.Expr:
        em = self.em
        return em.emit(relax.op.mean(em.rows(x, start, em.shape(x)[0]), axis=0, keepdims=True))

    def head_logits(self, y: relax.Expr, head: QLinear) -> relax.Expr:
        return y  # already real-valued
