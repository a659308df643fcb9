"""The alternatives edgevit is measured against, each prepared from the same timm model and weights.

A peer is a function PeerContext -> Artifact (results.peers.runners loads it into a batch-1 callable);
PEERS names the CPU peers, CUDA_PEERS those of `--device cuda` (PyTorch, ONNX Runtime's CUDA provider,
TensorRT). Peers that calibrate use the calibration split only (results.peers.inputs).
ExecuTorch, LiteRT, TensorRT and onnxruntime-gpu are optional installs: when one is missing, or a converter,
quantizer or engine builder fails on the model, the peer comes back as Unavailable with a one-line reason
instead of a number.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from results.peers import ort_recipes
from results.peers.runners import Artifact

INSTALL_HINTS = {
    "executorch": "pip install -e '.[peers]'",
    "litert_torch": "pip install --no-deps -r results/peers/litert-requirements.txt",
    "ai_edge_litert": "pip install --no-deps -r results/peers/litert-requirements.txt",
    "tensorrt": "pip install -e '.[gpu]'",
}
# onnxruntime-gpu ships the same `onnxruntime` package as the CPU wheel a plain install brings: its files replace those
ORT_GPU_HINT = "pip install -e '.[gpu]' && pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"


class NotHere(Exception):
    """Raised by a peer that cannot run on this machine as it is set up; the message is the one-line reason."""


@dataclass(frozen=True)
class Unavailable:
    """A contender that could not be prepared here, and why (one line)."""

    name: str
    reason: str


class PeerContext:
    """What every peer is prepared from: one timm model with its weights (a checkpoint file; None: the stored
    weights), calibration images, a work folder."""

    def __init__(self, model_name: str, work_dir: Path, calib_count: int, weights: Path | None = None):
        self.model_name = model_name
        self.weights = weights
        self.work_dir = work_dir
        self.calib_count = calib_count
        self._onnx: dict[tuple[bool, bool], Path] = {}  # made in this run; files left by an earlier run are not trusted
        work_dir.mkdir(parents=True, exist_ok=True)

    @cached_property
    def model(self):
        from compile.model.models import load_model

        return load_model(self.model_name, self.weights)

    @cached_property
    def image_size(self) -> int:
        from compile.model.models import model_spec

        return model_spec(self.model_name).image_size

    @cached_property
    def calibration(self) -> list[np.ndarray]:
        """Calibration images [1, 3, H, W] float32, preprocessed as the FP32 bundle's runtime does."""
        from results.peers.inputs import calibration_batches, model_preprocess

        return calibration_batches(model_preprocess(self.model_name), self.calib_count)

    def example(self) -> tuple:
        import torch

        return (torch.zeros(1, 3, self.image_size, self.image_size),)

    def onnx(self, fused: bool, half: bool = False) -> Path:
        """The exported ONNX graph, FP32 (optionally through ORT's transformer optimizer) or FP16 (`half`: every
        tensor, input and logits included), made once per run."""
        key = (fused, half)
        if key not in self._onnx:
            path = self.work_dir / f"model_{'fp16' if half else 'fp32'}{'_fused' if fused else ''}.onnx"
            if fused:
                ort_recipes.fuse_transformer(self.onnx(False), path, self.model.blocks[0].attn.num_heads,
                                             self.model.embed_dim)
            else:
                ort_recipes.export_onnx(self.model, self.image_size, path, half=half)
            self._onnx[key] = path
        return self._onnx[key]


def pytorch_eager(ctx: PeerContext) -> Artifact:
    """PyTorch eager FP32: the timm model itself, loaded from the same weights file."""
    from compile.model.models import stored_weights

    return Artifact("pytorch-eager-fp32", "pytorch", ctx.weights or stored_weights(ctx.model_name), ctx.model_name,
                    {"precision": "fp32", "mode": "eager, inference_mode"})


def onnxruntime(recipe_name: str, ctx: PeerContext) -> Artifact:
    """ONNX Runtime with one of results.peers.ort_recipes.RECIPES (FP32, static or dynamic INT8)."""
    recipe = ort_recipes.RECIPES[recipe_name]
    src = ctx.onnx(recipe.fused)
    path = src
    details = {"exporter": "torch.onnx (TorchScript), opset 17", **recipe.describe()}
    if recipe.quant != "none":
        path = ort_recipes.quantize(recipe, src, ctx.work_dir / f"model_{recipe_name}.onnx",
                                    ctx.calibration if recipe.quant == "static" else [])
    if recipe.quant == "static":
        details["calibration_images"] = len(ctx.calibration)
    return Artifact(f"onnxruntime-{recipe_name}", "onnxruntime", path, ctx.model_name, details)


def _pt2e(ctx: PeerContext, quantizer, *, fold: bool):
    """PT2E post-training quantization: export, insert observers, calibrate, convert (Q/DQ graph module)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = prepare_pt2e(torch.export.export(ctx.model, ctx.example()).module(), quantizer)
    with torch.no_grad():
        for batch in ctx.calibration:
            module(torch.from_numpy(batch))
    return convert_pt2e(module, fold_quantize=fold)


@contextlib.contextmanager
def _explicit_attention(model):
    """timm attention as q @ k^T, softmax, @ v instead of F.scaled_dot_product_attention (same math).

    ExecuTorch decomposes SDPA into a masked "safe softmax" XNNPACK does not take, which leaves
    portable kernels between the delegated parts: DeiT-tiny INT8 ran 2x slower that way here.
    """
    attentions = [m for m in model.modules() if hasattr(m, "fused_attn")]
    saved = [m.fused_attn for m in attentions]
    for m in attentions:
        m.fused_attn = False
    try:
        yield model
    finally:
        for m, fused in zip(attentions, saved, strict=True):
            m.fused_attn = fused


def executorch_xnnpack(quantized: bool, ctx: PeerContext) -> Artifact:
    """ExecuTorch with the XNNPACK delegate; INT8 via PT2E XNNPACKQuantizer (static, per-channel)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    details = {"precision": "fp32", "delegate": "XNNPACK", "attention": "explicit (timm fused_attn=False)"}
    with _explicit_attention(ctx.model) as module:
        if quantized:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )

            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            module = _pt2e(ctx, quantizer, fold=True)
            details |= {"precision": "int8", "quantizer": "PT2E XNNPACKQuantizer",
                        "scheme": "static, symmetric, per-channel weights", "calibration_images": len(ctx.calibration)}
        program = to_edge_transform_and_lower(torch.export.export(module, ctx.example()),
                                              partitioner=[XnnpackPartitioner()]).to_executorch()
    path = ctx.work_dir / f"model_{details['precision']}.pte"
    path.write_bytes(program.buffer)
    return Artifact(f"executorch-xnnpack-{details['precision']}", "executorch", path, ctx.model_name, details)


def litert_int8(ctx: PeerContext) -> Artifact:
    """LiteRT via litert-torch: PT2E static per-channel INT8 (its PT2EQuantizer), int8 model I/O."""
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    module = _pt2e(ctx, quantizer, fold=False)
    path = ctx.work_dir / "model_int8.tflite"
    litert_torch.convert(module, ctx.example(), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return Artifact("litert-int8", "litert", path, ctx.model_name,
                    {"precision": "int8", "converter": "litert-torch", "quantizer": "PT2E (litert_torch)",
                     "scheme": "static, symmetric, per-channel weights", "delegate": "XNNPACK",
                     "calibration_images": len(ctx.calibration)})


def _torch_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise NotHere(f"torch {torch.__version__} sees no CUDA device (a CPU build? torch==2.13.0 from PyPI is a CUDA one)")


def pytorch_cuda(precision: str, ctx: PeerContext) -> Artifact:
    """PyTorch eager on GPU 0, FP32 or FP16 (the model cast with .half(), as in a quick deployment)."""
    from compile.model.models import stored_weights

    _torch_cuda()
    return Artifact(f"pytorch-cuda-{precision}", "pytorch", ctx.weights or stored_weights(ctx.model_name),
                    ctx.model_name, {"precision": precision, "mode": "eager, inference_mode"}, device="cuda")


def onnxruntime_cuda(ctx: PeerContext) -> Artifact:
    """ONNX Runtime's CUDA execution provider on the FP32 graph (onnxruntime-gpu)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise NotHere(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider ({ORT_GPU_HINT})")
    return Artifact("onnxruntime-cuda-fp32", "onnxruntime", ctx.onnx(False), ctx.model_name,
                    {"exporter": "torch.onnx (TorchScript), opset 17", "precision": "fp32",
                     "provider": "CUDAExecutionProvider"}, device="cuda")


def tensorrt_int8_graph(ctx: PeerContext) -> Path:
    """The explicit-quantization (QDQ) ONNX graph of TensorRT INT8, calibrated on ctx.calibration."""
    return ort_recipes.quantize(ort_recipes.TENSORRT_INT8, ctx.onnx(False), ctx.work_dir / "model_tensorrt_int8_qdq.onnx",
                                ctx.calibration)


def tensorrt(precision: str, ctx: PeerContext) -> Artifact:
    """A TensorRT engine built here for GPU 0: FP16 from the FP16 graph, INT8 from the QDQ graph (explicit
    quantization, edgevit's calibration images; its unquantized layers FP32: strong typing keeps the graph's types)."""
    import tensorrt as trt

    from results.peers.tensorrt_engine import build_engine

    _torch_cuda()
    details = {"exporter": "torch.onnx (TorchScript), opset 17", "precision": precision, "typing": "strong",
               "tensorrt": trt.__version__}
    if precision == "fp16":
        graph = ctx.onnx(False, half=True)
    else:
        graph = tensorrt_int8_graph(ctx)
        details |= {"quantization": "explicit (QDQ)", **ort_recipes.TENSORRT_INT8.describe(),
                    "calibration_images": len(ctx.calibration), "unquantized_layers": "fp32"}
    plan = build_engine(graph, ctx.work_dir / f"model_tensorrt_{precision}.plan")
    return Artifact(f"tensorrt-{precision}", "tensorrt", plan, ctx.model_name, details, device="cuda")


PEERS: dict[str, Callable[[PeerContext], Artifact]] = {
    "pytorch-eager-fp32": pytorch_eager,
    **{f"onnxruntime-{name}": partial(onnxruntime, name) for name in ort_recipes.RECIPES},
    "executorch-xnnpack-fp32": partial(executorch_xnnpack, False),
    "executorch-xnnpack-int8": partial(executorch_xnnpack, True),
    "litert-int8": litert_int8,
}
DEFAULT_PEERS = ("pytorch-eager-fp32", "onnxruntime-fp32", "onnxruntime-int8-static", "onnxruntime-int8-dynamic",
                 "executorch-xnnpack-fp32", "executorch-xnnpack-int8", "litert-int8")
CUDA_PEERS: dict[str, Callable[[PeerContext], Artifact]] = {
    "pytorch-cuda-fp32": partial(pytorch_cuda, "fp32"),
    "pytorch-cuda-fp16": partial(pytorch_cuda, "fp16"),
    "onnxruntime-cuda-fp32": onnxruntime_cuda,
    "tensorrt-fp16": partial(tensorrt, "fp16"),
    "tensorrt-int8": partial(tensorrt, "int8"),
}
DEVICE_PEERS = {"cpu": (PEERS, DEFAULT_PEERS), "cuda": (CUDA_PEERS, tuple(CUDA_PEERS))}  # device -> (all, default)


def prepare_peer(name: str, ctx: PeerContext) -> Artifact | Unavailable:
    """Prepare one peer; one that cannot be had here (not installed, conversion or quantization fails)
    becomes Unavailable with a one-line reason, so the rest of the run goes on."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # converters and calibrators print progress; stdout is the table's
            return {**PEERS, **CUDA_PEERS}[name](ctx)
    except NotHere as err:
        return Unavailable(name, str(err))
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        hint = f" ({INSTALL_HINTS[top]})" if top in INSTALL_HINTS else ""
        return Unavailable(name, f"{err.name} is not installed{hint}")
    except Exception as err:  # noqa: BLE001 - converters and quantizers fail in many ways; report, go on
        first = (str(err).strip().splitlines() or [""])[0][:300]
        return Unavailable(name, f"preparation failed: {type(err).__name__}: {first}")
