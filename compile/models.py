"""Model registry: timm ViT/DeiT names edgevit supports, and how their weights are found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compile.data import data_dir
from runtime.errors import EdgevitError
from runtime.manifest import InputSpec
from runtime.preprocess import Preprocess


@dataclass(frozen=True)
class ModelSpec:
    """A supported timm model: its name and the input it expects."""

    name: str
    image_size: int = 224
    crop_pct: float = 0.9
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"

    def input_spec(self, dtype: str = "float32") -> InputSpec:
        """The manifest's input section: timm's eval transform of this model, as the runtime applies it."""
        return InputSpec(shape=[1, 3, self.image_size, self.image_size], dtype=dtype, layout="NCHW",
                         mean=list(self.mean), std=list(self.std), resize=int(self.image_size / self.crop_pct),
                         crop_pct=self.crop_pct, interpolation=self.interpolation)

    def preprocess(self, dtype: str = "float32") -> Preprocess:
        """The image transform a bundle of this model applies (float32 normalized, or raw uint8 pixels)."""
        return Preprocess.from_manifest(self.input_spec(dtype))


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("deit_tiny_patch16_224"),
        ModelSpec("deit_small_patch16_224"),
        ModelSpec("deit_base_patch16_224"),
        ModelSpec("vit_tiny_patch16_224", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ModelSpec("vit_small_patch16_224", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ModelSpec("vit_base_patch16_224", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        ModelSpec("deit_tiny_distilled_patch16_224"),
        ModelSpec("deit_small_distilled_patch16_224"),
    )
}
DEFAULT_MODEL = "deit_tiny_patch16_224"


def model_spec(name: str) -> ModelSpec:
    """Look a model up by name; an unknown name lists the known ones."""
    if name not in MODELS:
        raise EdgevitError(f"unknown model '{name}'; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def import_timm():
    """Import timm on a machine whose torchvision C ops cannot load beside CPU torch.

    timm imports torchvision at import time; PyPI's torchvision for this torch is a CUDA build whose
    C ops fail to register, so `import torchvision` stops at "operator torchvision::nms does not
    exist". Declaring the two schemas it registers fake kernels for lets it import; a ViT never
    uses them.
    """
    import torch

    try:
        import timm
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        import sys

        for mod in [m for m in sys.modules if m.startswith(("torchvision", "timm"))]:
            del sys.modules[mod]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_timm._library = lib  # keep the registration alive
        import timm
    return timm


def resolve_weights(name: str, weights: Path | None) -> Path | None:
    """Weights file for a model: --weights, else <data dir>/<name>.safetensors, else None (hub)."""
    if weights is not None:
        if not Path(weights).is_file():
            raise EdgevitError(f"weights file not found: {weights}")
        return Path(weights)
    candidate = data_dir() / f"{name}.safetensors"
    return candidate if candidate.is_file() else None


def load_model(name: str, weights: Path | None = None, *, pretrained_required: bool = True):
    """Build a timm model in eval mode with its weights.

    Weights come from `weights`, else the data directory, else timm's hub download. With
    `pretrained_required=False` a model without any weights is randomly initialised (for tests
    of architectures whose weights are not on this machine).
    """
    model_spec(name)
    timm = import_timm()
    path = resolve_weights(name, weights)
    if path is not None:
        from safetensors.torch import load_file

        model = timm.create_model(name, pretrained=False)
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except Exception as err:  # noqa: BLE001 - torch and safetensors raise several unrelated types here
            raise EdgevitError(f"weights {path} do not fit {name}: {str(err).splitlines()[0]}") from None
        return model.eval()
    if not pretrained_required:
        return timm.create_model(name, pretrained=False).eval()
    try:
        return timm.create_model(name, pretrained=True).eval()
    except Exception:  # noqa: BLE001 - the hub download fails in many ways (offline, auth, missing file)
        raise EdgevitError(
            f"no weights for {name}: pass --weights FILE.safetensors, put {name}.safetensors in "
            f"{data_dir()} (or set EDGEVIT_DATA), or go online so timm can download them"
        ) from None
