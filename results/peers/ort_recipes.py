"""ONNX Runtime recipes: how the exported FP32 graph is prepared and quantized, as data.

`int8-static` and `int8-dynamic` are the fastest recipes of each kind found on the development
machine (AMD EPYC, AVX-512 VNNI, 2 threads, DeiT-tiny batch 1); every other entry differs from one
of them in one knob, so `python -m results bench --peers all` re-measures what each knob gives.
Found there (10th-percentile latency over 200 interleaved runs, top-1 on 400 evaluation images;
FP32 28.4 ms, 81.2%): dynamic quantization of the weight MatMuls 14.4 ms (81.8%), whatever its
range / per-channel / weight-type setting; static QOperator u8 x s8 on the weight MatMuls 15.5-15.8 ms
(81.0-81.8%); static QDQ 18.9 ms whatever the activation type or matmul set (81.5%); static with the
attention matmuls (q @ k^T, attn @ v) quantized too 18.9 ms; QOperator with s8 activations 89 ms
(MLAS has no s8 x s8 path here); the transformer optimizer's SkipLayerNorm / BiasGelu fusions
block the quantized fusions and are slower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class OrtRecipe:
    """One way to run the model in ONNX Runtime."""

    quant: str = "none"  # none | static (calibrated activation scales) | dynamic (scales per call)
    fused: bool = False  # onnxruntime.transformers optimizer (model_type vit) before quantizing
    quant_format: str = "QDQ"  # static: QDQ (ORT fuses Q/DQ around ops into integer kernels) | QOperator
    activations: str = "u8"  # static: u8 | s8
    weights: str = "s8"  # u8 | s8
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights (meant for CPUs without VNNI)
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv")  # () quantizes every op type ORT supports
    calibration: str = "minmax"  # static: minmax | entropy | percentile
    const_b_only: bool = True  # quantize only MatMuls whose B is a weight (not q @ k^T, attn @ v)
    symmetric_activations: bool = False  # static: activation zero points 0 (what TensorRT's Q/DQ layers take)
    quantize_bias: bool = True  # static: biases as int32 through a DequantizeLinear (TensorRT takes float ones)

    def describe(self) -> dict:
        """The recipe as a flat record (what the JSONL and the table say)."""
        if self.quant == "none":
            return {"quant": "none", "fused": self.fused}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if not (self.quant == "dynamic" and k in ("quant_format", "activations", "calibration",
                                                          "symmetric_activations", "quantize_bias"))}


_STATIC = OrtRecipe(quant="static", quant_format="QOperator")
_DYNAMIC = OrtRecipe(quant="dynamic", per_channel=False, op_types=("MatMul", "Gemm"))

RECIPES: dict[str, OrtRecipe] = {
    "fp32": OrtRecipe(),
    "fp32-fused": OrtRecipe(fused=True),
    "int8-static": _STATIC,
    "int8-dynamic": _DYNAMIC,
    # one knob away from int8-static
    "int8-static-qdq": replace(_STATIC, quant_format="QDQ"),
    "int8-static-qdq-s8s8-all-matmuls": replace(_STATIC, quant_format="QDQ", activations="s8", const_b_only=False),
    "int8-static-s8s8": replace(_STATIC, activations="s8"),
    "int8-static-all-matmuls": replace(_STATIC, const_b_only=False),
    "int8-static-per-tensor": replace(_STATIC, per_channel=False),
    "int8-static-reduce-range": replace(_STATIC, reduce_range=True),
    "int8-static-all-ops": replace(_STATIC, op_types=()),
    "int8-static-percentile": replace(_STATIC, calibration="percentile"),
    "int8-static-fused": replace(_STATIC, fused=True),
    # one knob away from int8-dynamic
    "int8-dynamic-reduce-range": replace(_DYNAMIC, reduce_range=True),
    "int8-dynamic-per-channel": replace(_DYNAMIC, per_channel=True),
    "int8-dynamic-u8-weights": replace(_DYNAMIC, weights="u8"),
    "int8-dynamic-all-matmuls": replace(_DYNAMIC, const_b_only=False),
    "int8-dynamic-fused": replace(_DYNAMIC, fused=True),
}

# The explicit-quantization graph TensorRT builds its INT8 engine from (not an ONNX Runtime peer: several knobs
# away from int8-static): QDQ, s8 symmetric per-tensor activations calibrated on edgevit's calibration images,
# s8 symmetric per-channel weights, every MatMul (q @ k^T and attn @ v too, as edgevit's int8 GEMMs), float biases.
TENSORRT_INT8 = OrtRecipe(quant="static", quant_format="QDQ", activations="s8", const_b_only=False,
                          symmetric_activations=True, quantize_bias=False)


def export_onnx(model, image_size: int, path: Path, half: bool = False) -> Path:
    """The timm model as ONNX (TorchScript exporter, opset 17: LayerNormalization is one op); `half`: every
    tensor FP16, input and logits included (a copy of the model is cast, `model` stays FP32)."""
    import copy

    import torch

    dtype = torch.float16 if half else torch.float32
    module = copy.deepcopy(model).to(dtype) if half else model
    torch.onnx.export(module, (torch.zeros(1, 3, image_size, image_size, dtype=dtype),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["logits"])
    return path


def fuse_transformer(src: Path, out: Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's transformer optimizer (SkipLayerNormalization, BiasGelu fusions) on an FP32 graph."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(src), model_type="vit", num_heads=num_heads, hidden_size=hidden_size,
                   opt_level=0).save_model_to_file(str(out))
    return out


def quantize(recipe: OrtRecipe, src: Path, out: Path, calibration: list[np.ndarray]) -> Path:
    """Write the INT8 graph of `recipe` for FP32 graph `src`; static recipes calibrate on `calibration`."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    options = {"MatMulConstBOnly": recipe.const_b_only}
    op_types = list(recipe.op_types) or None
    if recipe.quant == "dynamic":
        if recipe.fused:  # shape inference cannot type the outputs of ORT's contrib ops
            options["DefaultTensorType"] = onnx.TensorProto.FLOAT
        quantize_dynamic(str(src), str(out), op_types_to_quantize=op_types, per_channel=recipe.per_channel,
                         reduce_range=recipe.reduce_range, weight_type=types[recipe.weights], extra_options=options)
        return out

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"x": batch}

    if recipe.fused or not recipe.quantize_bias:  # fused: the classifier's input comes from a Gather ORT leaves
        options["QuantizeBias"] = False  # unquantized, so there is no int32 bias scale
    if recipe.symmetric_activations:
        options["ActivationSymmetric"] = True
    quantize_static(
        str(src), str(out), Reader(), quant_format=getattr(QuantFormat, recipe.quant_format),
        op_types_to_quantize=op_types, per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
        activation_type=types[recipe.activations], weight_type=types[recipe.weights],
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[recipe.calibration],
        extra_options=options,
    )
    return out
