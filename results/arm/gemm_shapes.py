"""Each int8 GEMM shape of a ViT bundle, counted on its own against its SDOT floor.

In a model the GEMM kernels carry their fused epilogues (bias, GELU, requantization), so their counts
say little about the GEMM itself. Here each shape of the bundle's widest block (qkv, q @ k^T, p @ v,
proj, fc1, fc2) and the patch embedding and head are built as edgevit emits them (compile.kernels: the
operands packed for the board's dot instruction, int32 out) and counted alone (results/arm/functions.py).

The SDOT floor of a shape is MACs / 16 SDOTs plus the loads its register tiles need: every tile reads
its rows of A and its columns of B once per 16 k, 16 bytes a load (rows + columns loads per 16 k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from results.arm.boards import ArmBoard


@dataclass(frozen=True)
class GemmShape:
    """One GEMM: [batch x] [M, K] @ [K, N] (b given as [N, K] when transpose_b), lhs int8 or uint8."""

    name: str
    m: int
    k: int
    n: int
    lhs_dtype: str = "int8"
    batch: int = 0  # 0: a dense layer with a constant weight; else a batch matmul of two runtime operands
    transpose_b: bool = False

    @property
    def macs(self) -> int:
        return max(self.batch, 1) * self.m * self.k * self.n


def vit_gemm_shapes(manifest) -> list[GemmShape]:
    """The GEMMs of a bundle's model (its manifest): patch embedding, the widest block's six, the head."""
    from compile.model.models import load_model

    model = load_model(manifest.model.name, pretrained_required=False)
    dim, heads = manifest.model.embed_dim, model.blocks[0].attn.num_heads
    hidden, patch = model.blocks[0].mlp.fc1.out_features, model.patch_embed.patch_size
    tokens, merged = manifest.tome.tokens_per_block[0], manifest.tome.schedule[0]
    return [
        GemmShape("patch", model.patch_embed.num_patches, 3 * patch[0] * patch[1], dim, "uint8"),
        GemmShape("qkv", tokens, dim, 3 * dim),
        GemmShape("q @ k^T", tokens, dim // heads, tokens, batch=heads, transpose_b=True),
        GemmShape("p @ v", tokens, tokens, dim // heads, "uint8", batch=heads),
        GemmShape("proj", tokens, dim, dim),
        GemmShape("fc1", tokens - merged, dim, hidden),
        GemmShape("fc2", tokens - merged, hidden, dim),
        GemmShape("head", 1, dim, manifest.model.num_classes),
    ]


def _module(shapes: list[GemmShape], target, rng: np.random.Generator):
    """A Relax module with one function per shape (named by position), and each one's random operands."""
    from tvm import relax

    from compile.kernels import emit_int8_batch_matmul, emit_int8_dense, unsliced

    bb, inputs = relax.BlockBuilder(), {}
    for index, shape in enumerate(shapes):
        info = np.iinfo(shape.lhs_dtype)
        lead = (shape.batch,) if shape.batch else ()
        lhs = rng.integers(info.min, info.max + 1, (*lead, shape.m, shape.k)).astype(shape.lhs_dtype)
        # B as the model's: symmetric int8 (weights, and operands requantized to [-127, 127])
        rhs = rng.integers(-127, 128, (*lead, *((shape.n, shape.k) if shape.transpose_b else (shape.k, shape.n))))
        params = [relax.Var("a", relax.TensorType(lhs.shape, shape.lhs_dtype))]
        if shape.batch:
            params.append(relax.Var("b", relax.TensorType(rhs.shape, "int8")))
        name = f"gemm{index}"
        with bb.function(name, params):
            with bb.dataflow():
                if shape.batch:  # b requantized in the model: the kernels see its clip to [-127, 127]
                    b = bb.emit(relax.op.astype(relax.op.clip(params[1], -127, 127), "int8"))
                    out = emit_int8_batch_matmul(bb, params[0], b, target, transpose_b=shape.transpose_b)
                    out = unsliced(bb, out)[0]  # padded columns as the model's softmax reads them
                else:
                    out = emit_int8_dense(bb, params[0], rhs.astype(np.int8), target)
                result = bb.emit_output(out)
            bb.emit_func_output(result)
        inputs[name] = [lhs, rhs.astype(np.int8)] if shape.batch else [lhs]
    return bb.get(), inputs


def sdot_floor(shape: GemmShape, rows: int, columns: int) -> float:
    """MACs / 16 SDOTs plus the 16-byte loads of A's rows and B's columns every rows x columns tile makes per 16 k."""
    tiles = max(shape.batch, 1) * math.ceil(shape.m / rows) * math.ceil(shape.n / columns)
    return shape.macs / 16 + tiles * math.ceil(shape.k / 16) * (rows + columns)


def count_gemm_shapes(shapes: list[GemmShape], board: ArmBoard, root: Path) -> list[dict]:
    """Per shape: instructions, SDOTs, instructions per MAC, and on dot-product boards the floor and the ratio."""
    from compile.kernels.dot_kernel import dot_kernel_for
    from compile.kernels.packed_gemm import GemmPlan
    from results.arm.functions import count_functions
    from targets import load_preset

    target = load_preset(board.preset).target()
    module, inputs = _module(shapes, target, np.random.default_rng(0))
    counts, _, _ = count_functions(module, inputs, board.preset, root, board.qemu_cpu)
    kernel = dot_kernel_for(target)
    rows = []
    for index, shape in enumerate(shapes):
        count = counts[f"gemm{index}"]
        instructions = sum(n for name, n in count.kernels.items() if "int8" in name)  # not the operand's clip
        plan = GemmPlan.make(kernel, shape.m, shape.n, shape.k, shape.lhs_dtype, -127)
        row = {"shape": shape.name, "batch": shape.batch, "m": shape.m, "k": shape.k, "n": shape.n,
               "lhs_dtype": shape.lhs_dtype, "macs": shape.macs, "tile": [plan.rows, plan.columns],
               "kernel": plan.kernel.name, "instructions": instructions, "dot": count.classes["dot"],
               "instructions_per_mac": round(instructions / shape.macs, 4)}
        if kernel.name == "arm-sdot":
            floor = sdot_floor(shape, plan.rows, plan.columns)
            row.update(floor=round(floor), vs_floor=round(instructions / floor, 3))
        rows.append(row)
    return rows
