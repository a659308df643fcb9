"""int8-full numerics: integers only from the uint8 pixels to the int32 logits.

- residual stream: int32 at a power-of-two scale (qvit.residual_scale); branch outputs are requantized
  into it with per-column dyadic multipliers and added as integers;
- LayerNorm (I-ViT style): integer mean and variance, exact integer square root, 1/std as one integer
  division per row, per-channel Q16 gamma: the int8 output lands directly in the next GEMM's scales;
- softmax (Shiftmax-like): logits -> base-2 exponent by a dyadic multiply, 2^-integer part as a shift,
  2^-fraction by a second-order integer polynomial, normalization by one reciprocal per row -> uint8;
- GELU (ShiftGELU-like, I-BERT's polynomial erf) in Q12, then a per-channel shift into fc2's groups;
  QuickGELU as x * sigmoid(1.702 x) with e^-|t| from the softmax's 2^-u and one integer division;
- norm_pre (a LayerNorm from the residual stream into it), q/k norm (qkv's q and k columns first brought
  to one power-of-two scale each) and average pooling (a rounded integer mean) use the same pieces;
The last op multiplies the int32 logits by their float scales (the graph's output is float32 logits).
Constants come from compile.quant.integer_params; the tests re-implement these steps in numpy.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from compile.graph.emitter import Emitter
from compile.graph.gemm import gemm_formats
from compile.kernels import MergedHeads
from compile.kernels.integer_ops import emit_isqrt
from compile.kernels.row_kernels import emit_layer_norm, emit_softmax
from compile.model.vit import Block, LayerNorm, Linear, ViT
from compile.quant import integer_params as P
from compile.quant.formats import LayerFormats
from compile.quant.scales import QBlock, QuantizedViT


class IntegerNumerics:
    """The Numerics of the integer-only graph, --quant int8-full (see compile.graph.builder.Numerics)."""

    integer_only = True

    def __init__(self, em: Emitter, vit: ViT, formats: LayerFormats, quant: QuantizedViT):
        self.em = em
        self.vit = vit
        self.formats = formats
        self.qvit = quant
        self.gemms = gemm_formats(em, quant)

    # -- integer helpers ---------------------------------------------------------------------------
    def _i64(self, x: relax.Expr) -> relax.Expr:
        return x if x.ty.dtype == "int64" else self.em.emit(relax.op.astype(x, "int64"))

    def _c(self, value, dtype: str = "int64") -> relax.Expr:
        return self.em.const(np.asarray(value, dtype=dtype))

    def _shift_round(self, x: relax.Expr, shift) -> relax.Expr:
        """rshift_round(x, shift) in x's integer type; shift >= 1 (scalar or per-column array)."""
        shift = np.asarray(shift, dtype=np.int64)
        em, dtype = self.em, str(x.ty.dtype)
        return em.emit(relax.op.right_shift(relax.op.add(x, self._c(np.left_shift(1, shift - 1), dtype)),
                                            self._c(shift, dtype)))

    def _requant(self, x: relax.Expr, req: P.Requant, low: int, high: int, dtype: str) -> relax.Expr:
        em = self.em
        y = self._shift_round(em.emit(relax.op.multiply(self._i64(x), self._c(req.mult))), req.shift)
        return em.emit(relax.op.astype(relax.op.clip(y, low, high), dtype))

    def _mul(self, x: relax.Expr, value) -> relax.Expr:
        return self.em.emit(relax.op.multiply(x, self._c(value, str(x.ty.dtype))))

    def _layer_norm(self, x: relax.Expr, params: P.LayerNormParams, dtype: str) -> relax.Expr:
        """I-ViT LayerNorm over the last axis of x [rows, C]: integer mean / variance, exact isqrt, one
        division per row; the output lands in the units `params` were made for."""
        em = self.em
        if em.cpu:
            return emit_layer_norm(em, x, params, dtype)
        channels = em.shape(x)[1]
        x = self._i64(x)
        total = em.emit(relax.op.sum(x, axis=1, keepdims=True))
        mean = em.emit(relax.op.floor_divide(relax.op.add(self._mul(total, 2), self._c(channels)), self._c(2 * channels)))
        d = em.emit(relax.op.subtract(x, mean))
        var = em.emit(relax.op.floor_divide(relax.op.sum(relax.op.multiply(d, d), axis=1, keepdims=True),
                                            self._c(channels)))
        var = em.emit(relax.op.add(var, self._c(params.eps)))
        std = em.emit(relax.op.maximum(emit_isqrt(em, var), self._c(1)))
        inv = em.emit(relax.op.floor_divide(self._c(1 << P.NORM_INV_BITS), std))
        z = self._shift_round(em.emit(relax.op.multiply(d, inv)), P.NORM_INV_BITS - P.NORM_FRAC)
        y = em.emit(relax.op.add(self._mul(z, params.gamma), self._c(params.beta)))
        y = self._shift_round(y, params.shift)
        return em.emit(relax.op.astype(relax.op.clip(y, params.low, params.high), dtype))

    def _exp2_negative(self, u: relax.Expr) -> relax.Expr:
        """2^-u in Q15 for u >= 0 in Q15 (u clipped at EXP_MIN): 2^-whole as a shift, 2^-frac by a polynomial."""
        em = self.em
        u = em.emit(relax.op.minimum(u, self._c(P.EXP_MIN << P.EXP_FRAC)))
        whole = em.emit(relax.op.right_shift(u, self._c(P.EXP_FRAC)))
        frac = em.emit(relax.op.bitwise_and(u, self._c((1 << P.EXP_FRAC) - 1)))
        c1, c2 = P.exp2_poly()
        square = self._shift_round(em.emit(relax.op.multiply(frac, frac)), P.EXP_FRAC)
        poly = em.emit(relax.op.add(self._shift_round(self._mul(frac, c1), P.EXP_FRAC),
                                    self._shift_round(self._mul(square, c2), P.EXP_FRAC)))
        return em.emit(relax.op.right_shift(relax.op.add(poly, self._c(1 << P.EXP_FRAC)), whole))

    # -- Numerics ----------------------------------------------------------------------------------
    def embed(self, patch_out: relax.Expr) -> relax.Expr:
        em, qvit = self.em, self.qvit
        prefix, pos = P.embedding(qvit)
        x = self._requant(patch_out, P.to_residual(qvit.patch, qvit), -P.RESIDUAL_CLAMP, P.RESIDUAL_CLAMP, "int32")
        x = em.emit(relax.op.add(x, em.const(pos)))
        x = em.emit(relax.op.concat([em.const(prefix), x], axis=0))
        if self.vit.norm_pre is None:
            return x
        return self._layer_norm(x, P.residual_layer_norm(self.vit.norm_pre, qvit), "int32")

    def norm_for(self, x: relax.Expr, norm: LayerNorm, linear: Linear) -> relax.Expr:
        return self._layer_norm(x, P.layer_norm(norm, self.qvit.layer(linear.name), self.qvit), "int8")

    def norm_rows(self, x: relax.Expr, norm: LayerNorm) -> relax.Expr:
        raise NotImplementedError("the integer graph has no LayerNorm on every row before average pooling")

    def linear(self, x: relax.Expr, linear: Linear, x_view: MergedHeads | None = None) -> relax.Expr:
        return self.gemms[self.formats[linear.name]].dense(x, linear, x_view)

    def qkv_values(self, y: relax.Expr, block: Block) -> relax.Expr:
        """int8 q, k, v [N, 3C]; with a q/k norm, q and k go to their pre-norm scale, then the per-head LayerNorm."""
        qblock = self.qvit.blocks[block.index]
        if block.q_norm is None:
            return self._requant(y, P.qkv_requant(qblock), -127, 127, "int8")
        em = self.em
        tokens, width = em.shape(y)
        width //= 3
        heads = self.vit.num_heads
        parts = []
        for j, (requant, params) in enumerate(zip(P.qk_norm_in(qblock), P.qk_layer_norms(block, qblock))):
            pre = self._requant(em.rows(y, j * width, (j + 1) * width, axis=1), requant, -P.RESIDUAL_CLAMP,
                                P.RESIDUAL_CLAMP, "int32")
            per_head = em.emit(relax.op.reshape(pre, (tokens * heads, width // heads)))
            parts.append(em.emit(relax.op.reshape(self._layer_norm(per_head, params, "int8"), (tokens, width))))
        parts.append(self._requant(em.rows(y, 2 * width, 3 * width, axis=1), P.v_requant(qblock), -127, 127, "int8"))
        return em.emit(relax.op.concat(parts, axis=1))

    def attention(self, qkv: relax.Expr, block: Block, size: relax.Expr | None,
                  queries: int | None) -> tuple[relax.Expr, MergedHeads]:
        """(proj's int8 input [heads, Q, D], read as [Q, C]) of the integer attention over int8 qkv."""
        qblock = self.qvit.blocks[block.index]
        o = self.em.attend_int8(qkv, self.vit.num_heads, queries, lambda logits: self._probabilities(logits, qblock, size))
        return self._requant(o, P.attention_out_requant(qblock, self.vit.num_heads), -127, 127, "int8"), MergedHeads()

    def _probabilities(self, logits: relax.Expr, block: QBlock, size: relax.Expr | None) -> relax.Expr:
        em = self.em
        heads = self.vit.num_heads
        z, bias = logits, None
        if size is not None:  # proportional attention: + ln(size) of each key token, from a table
            tokens = em.shape(size)[0]
            table = em.const(P.log_size_table(block, heads, self.vit.tokens))
            bias = em.emit(relax.op.take(table, relax.op.reshape(size, (tokens,)), axis=0))
        if em.cpu:
            return emit_softmax(em, logits, bias, P.softmax_exponent(block, heads), P.prob_levels(block, heads))
        if bias is not None:
            z = em.emit(relax.op.add(z, relax.op.reshape(bias, (1, 1, em.shape(bias)[0]))))
        d = self._i64(em.emit(relax.op.subtract(z, relax.op.max(z, axis=-1, keepdims=True))))
        exponent = P.softmax_exponent(block, heads)
        t = self._shift_round(em.emit(relax.op.multiply(d, self._c(exponent.mult))), exponent.shift)
        e = self._exp2_negative(em.emit(relax.op.negative(t)))
        total = em.emit(relax.op.sum(e, axis=-1, keepdims=True))
        inv = em.emit(relax.op.floor_divide(self._c(1 << P.PROB_RECIP_BITS), total))
        levels = P.prob_levels(block, heads)
        p = self._shift_round(em.emit(relax.op.multiply(self._mul(e, levels), inv)), P.PROB_RECIP_BITS)
        return em.emit(relax.op.astype(relax.op.clip(p, 0, 255), "uint8"))

    def residual_add(self, x: relax.Expr, y: relax.Expr, linear: Linear) -> relax.Expr:
        branch = self._requant(y, P.to_residual(self.qvit.layer(linear.name), self.qvit), -P.RESIDUAL_CLAMP,
                               P.RESIDUAL_CLAMP, "int32")
        return self.em.emit(relax.op.add(x, branch))

    def mlp_hidden(self, y: relax.Expr, block: Block) -> relax.Expr:
        qblock = self.qvit.blocks[block.index]
        g = self._requant(y, P.gelu_in(qblock.fc1), -P.GELU_CLAMP, P.GELU_CLAMP, "int32")
        gelu = self._quick_gelu(self._i64(g)) if block.activation == "quick_gelu" else self._gelu(g)
        requant, _ = P.gelu_out(qblock.fc2)
        return self._requant(gelu, requant, -127, 127, "int8")

    def _quick_gelu(self, g: relax.Expr) -> relax.Expr:
        """g * sigmoid(1.702 g) in Q12: sigmoid(|t|) = 1 / (1 + e^-|t|) in Q15, mirrored for g < 0."""
        em = self.em
        e = self._exp2_negative(self._shift_round(self._mul(em.emit(relax.op.abs(g)), P.QUICK_GELU_EXP), P.GELU_FRAC))
        sigmoid = em.emit(relax.op.floor_divide(self._c(1 << (2 * P.EXP_FRAC)), relax.op.add(e, self._c(1 << P.EXP_FRAC))))
        sigmoid = em.emit(relax.op.where(relax.op.less(g, self._c(0)), relax.op.subtract(self._c(1 << P.EXP_FRAC), sigmoid),
                                         sigmoid))
        return self._shift_round(em.emit(relax.op.multiply(g, sigmoid)), P.EXP_FRAC)

    def _gelu(self, g: relax.Expr) -> relax.Expr:
        """g * (1 + erf(g / sqrt 2)) / 2 in Q12, with I-BERT's second-order erf, on int32 g (|g| <= 2^20).

        int32 throughout, twice the vector lanes of int64 and the same bits: from |g| = GELU_SATURATION on erf
        is exactly +-1 (GELU is g or 0), so the steps run on g clipped there and every product stays below 2^28."""
        em = self.em
        clipped = em.emit(relax.op.clip(g, -P.GELU_SATURATION, P.GELU_SATURATION))
        u = self._shift_round(self._mul(em.emit(relax.op.abs(clipped)), P.INV_SQRT2), 15)
        c = em.emit(relax.op.subtract(relax.op.minimum(u, self._c(P.ERF_B, "int32")), self._c(P.ERF_B, "int32")))
        c2 = self._shift_round(em.emit(relax.op.multiply(c, c)), P.GELU_FRAC)
        magnitude = em.emit(relax.op.add(self._shift_round(self._mul(c2, P.ERF_A), 15),
                                         self._c(1 << P.GELU_FRAC, "int32")))
        erf = em.emit(relax.op.where(relax.op.less(clipped, self._c(0, "int32")), relax.op.negative(magnitude),
                                     magnitude))
        inside = self._shift_round(em.emit(relax.op.multiply(clipped, relax.op.add(erf, self._c(1 << P.GELU_FRAC,
                                                                                                "int32")))),
                                   P.GELU_FRAC + 1)
        return em.emit(relax.op.where(relax.op.greater(g, self._c(P.GELU_SATURATION, "int32")), g, inside))

    def mean_rows(self, x: relax.Expr, start: int) -> relax.Expr:
        """The rounded integer mean of rows start.. of the residual stream (average pooling)."""
        em = self.em
        rows = em.shape(x)[0] - start
        total = em.emit(relax.op.sum(self._i64(em.rows(x, start, start + rows)), axis=0, keepdims=True))
        mean = em.emit(relax.op.floor_divide(relax.op.add(self._mul(total, 2), self._c(rows)), self._c(2 * rows)))
        return em.emit(relax.op.astype(mean, "int32"))

    def head_logits(self, y: relax.Expr, head: Linear) -> relax.Expr:
        scale = P.head_scale(self.qvit.layer(head.name))
        return self.em.emit(relax.op.multiply(relax.op.astype(y, "float32"), self.em.const(scale)))
