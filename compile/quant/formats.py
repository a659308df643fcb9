"""Layer formats as data: what each costs in bytes, and which a target can run.

float16 arithmetic exists on the Cortex-A76 (rpi5: `fphp` / `asimdhp`) and on NVIDIA GPUs; elsewhere
it is not offered. Sizes count what the bundle stores for a GEMM's weight (biases, embeddings and
norms stay float32 in every format and are counted once, by `other_bytes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from compile.quant.config import LAYER_FORMATS, QuantConfig
from compile.quant.int4 import packed_bytes
from runtime.errors import EdgevitError

if TYPE_CHECKING:
    from compile.quant.qvit import QuantizedViT
    from targets.preset import TargetPreset

FP16_CPU_FEATURES = {"fphp", "asimdhp"}  # ARMv8.2 half-precision scalar and vector arithmetic


def weight_bytes(fmt: str, rows: int, columns: int, group: int) -> int:
    """Bytes of a [rows, columns] GEMM weight in `fmt`, scales included (group: the int4 scale group, 0 = column)."""
    if fmt == "float32":
        return 4 * rows * columns
    if fmt == "float16":
        return 2 * rows * columns
    if fmt == "int8":
        return rows * columns + 4 * columns
    return packed_bytes(rows, columns, group)


def other_bytes(qvit: QuantizedViT) -> int:
    """Bytes of the float32 parameters outside the GEMM weights: biases, embeddings, LayerNorms."""
    norms = [qvit.norm, qvit.norm_pre, *(n for b in qvit.blocks for n in (b.ln1, b.ln2)),
             *(n for b in qvit.blocks if b.qk_norm for n in (b.qk_norm.q, b.qk_norm.k))]
    arrays = [qvit.prefix, qvit.pos, *(linear.bias for linear in qvit.linears()),
              *(a for n in norms if n is not None for a in (n.gamma, n.beta))]
    return 4 * sum(int(np.size(a)) for a in arrays)


def computes_fp16(preset: TargetPreset) -> bool:
    return preset.device == "cuda" or FP16_CPU_FEATURES <= set(preset.required_cpu_features)


def target_formats(preset: TargetPreset) -> tuple[str, ...]:
    """The layer formats `preset` runs: all but float16 where it has no float16 arithmetic."""
    return tuple(fmt for fmt in LAYER_FORMATS if fmt != "float16" or computes_fp16(preset))


def offered_formats(config: QuantConfig, preset: TargetPreset) -> tuple[str, ...]:
    """What --quant mixed may choose from: --formats, or every format the target runs; a named format the target
    cannot run is an error."""
    runs = target_formats(preset)
    for fmt in config.formats or ():
        if fmt not in runs:
            from targets import list_presets

            able = [p.name for p in list_presets() if fmt in target_formats(p)]
            raise EdgevitError(f"--formats {fmt}: target {preset.name} does not compute in {fmt} "
                               f"(targets that do: {', '.join(able)})")
    return tuple(fmt for fmt in runs if config.formats is None or fmt in config.formats)
