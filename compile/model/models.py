"""timm models by name: their input spec, and building them with their weights (compile.model.checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compile.data import data_dir
from compile.model.timm_import import import_timm
from runtime.errors import EdgevitError
from runtime.manifest import InputSpec
from runtime.preprocess import Preprocess

if TYPE_CHECKING:
    from compile.model.checkpoint import Checkpoint


@dataclass(frozen=True)
class ModelSpec:
    """A timm model by name and the input it expects (timm's pretrained config, or the user's flags)."""

    name: str
    image_size: int = 224
    crop_pct: float = 0.9
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.image_size < 8 or not 0 < self.crop_pct <= 1 or self.interpolation not in INTERPOLATIONS:
            raise EdgevitError(f"model {self.name}: image size {self.image_size}, crop_pct {self.crop_pct}, interpolation "
                               f"'{self.interpolation}': need size >= 8, 0 < crop_pct <= 1, one of {', '.join(INTERPOLATIONS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise EdgevitError(f"model {self.name}: --mean and --std take three values (R,G,B), std > 0")

    def input_spec(self, dtype: str = "float32") -> InputSpec:
        """The manifest's input section: timm's eval transform of this model, as the runtime applies it."""
        return InputSpec(shape=[1, 3, self.image_size, self.image_size], dtype=dtype, layout="NCHW",
                         mean=list(self.mean), std=list(self.std), resize=int(self.image_size / self.crop_pct),
                         crop_pct=self.crop_pct, interpolation=self.interpolation)

    def preprocess(self, dtype: str = "float32") -> Preprocess:
        """The image transform a bundle of this model applies (float32 normalized, or raw uint8 pixels), computed by
        this machine's build of the native core, the implementation every bundle runs."""
        from compile.native import host_core

        return Preprocess.from_manifest(self.input_spec(dtype), host_core())


DEFAULT_MODEL = "deit_tiny_patch16_224"
INTERPOLATIONS = ("bicubic", "bilinear")


def model_spec(name: str, **overrides) -> ModelSpec:
    """The spec of a timm model name: input size, mean / std, crop and interpolation from timm's pretrained
    config for it, each replaced by an override that is not None (--image-size, --mean, ...)."""
    timm = import_timm()
    if not timm.is_model(name):
        from compile.model.architecture import FAMILIES

        raise EdgevitError(f"unknown model '{name}': not a timm model name; edgevit compiles timm ViTs of the "
                           f"standard structure: {'; '.join(FAMILIES)}")
    from timm.models import get_pretrained_cfg

    from compile.model.checkpoint import preprocessing_of

    cfg = get_pretrained_cfg(name)
    found = {} if cfg is None else preprocessing_of(cfg.to_dict())
    if found.get("interpolation") not in (None, *INTERPOLATIONS):
        found["interpolation"] = "bicubic"  # timm's "bicubic"/"bilinear" are what PIL offers; others fall back
    given = {key: value for key, value in overrides.items() if value is not None}
    return ModelSpec(name, **{**found, **given})


def find_checkpoint(name: str, weights: Path | None) -> Checkpoint | None:
    """--weights (file or folder), else <data dir>/<name>.safetensors, else None (timm's hub, or random init)."""
    from compile.model.checkpoint import read_checkpoint

    if weights is not None:
        return read_checkpoint(weights)
    stored = stored_weights(name)
    return None if stored is None else read_checkpoint(stored)


def stored_weights(name: str) -> Path | None:
    """<data dir>/<name>.safetensors when it is there."""
    candidate = data_dir() / f"{name}.safetensors"
    return candidate if candidate.is_file() else None


def load_model(model: ModelSpec | str, weights: Path | None = None, *, pretrained_required: bool = True):
    """A timm model by spec or name with the weights `find_checkpoint` finds (see build_model)."""
    spec = model_spec(model) if isinstance(model, str) else model
    return build_model(spec, find_checkpoint(spec.name, weights), pretrained_required=pretrained_required)


OUTPUTS = ("logits", "features")


def build_model(spec: ModelSpec, checkpoint: Checkpoint | None, *, pretrained_required: bool = True,
                output: str = "logits"):
    """Build a timm model in eval mode with its weights, refusing one not of the standard ViT structure.

    The head follows the checkpoint: its number of classes is the head's rows. Position embeddings of
    another grid are resampled (timm's checkpoint filter). Without a checkpoint the weights come from
    timm's hub, or with `pretrained_required=False` the model is randomly initialised (for tests of
    architectures whose weights are not on this machine). `output="features"` drops the head(s): the
    model then returns timm's pooled pre-logits embedding [N, embed_dim] (`forward_head(pre_logits=True)`;
    a distilled model averages its two tokens, as timm does).
    """
    model = _create(spec, None if checkpoint is None else checkpoint.num_classes,
                    {} if checkpoint is None else checkpoint.model_args)
    if checkpoint is not None:
        _load_weights(model, checkpoint, spec.name)
    elif pretrained_required:
        model = _download(spec)
    if output == "features":
        model.reset_classifier(0)
    elif model.num_classes == 0:
        raise EdgevitError(f"model {spec.name} has no classifier head (0 classes); compile a checkpoint with a head, "
                           "or an embedding with --output features")
    return model.eval()


def _download(spec: ModelSpec):
    """The model with timm's pretrained weights from its hub (online only)."""
    try:
        return import_timm().create_model(spec.name, pretrained=True, img_size=spec.image_size)
    except Exception:  # noqa: BLE001 - the hub download fails in many ways (offline, auth, missing file)
        raise EdgevitError(
            f"no weights for {spec.name}: pass --weights FILE (.safetensors, .pth), put {spec.name}.safetensors in "
            f"{data_dir()} (or set EDGEVIT_DATA), or go online so timm can download them"
        ) from None


def _create(spec: ModelSpec, num_classes: int | None, model_args: dict):
    """The randomly initialised timm model at the spec's input size, its registered arguments replaced by
    the checkpoint's `model_args` (depth, embed_dim, ...); one line when it is not a standard ViT."""
    from compile.model.architecture import unsupported_part

    timm = import_timm()
    kwargs = {**model_args, **({} if num_classes is None else {"num_classes": num_classes})}
    try:
        model = timm.create_model(spec.name, pretrained=False, **{**kwargs, "img_size": spec.image_size})
    except TypeError:  # a model without an img_size argument is no ViT: say which part, below
        try:
            model = timm.create_model(spec.name, pretrained=False, **kwargs)
        except TypeError as err:
            raise EdgevitError(f"model {spec.name}: the checkpoint's model_args do not fit it ({err})") from None
    problem = unsupported_part(model)
    if problem is not None:
        raise EdgevitError(f"model {spec.name} is not supported: {problem}")
    return model


def _load_weights(model, checkpoint: Checkpoint, name: str) -> None:
    """Load a state dict strictly after timm's own conversion for the model (pos_embed resampling, ...)."""
    import sys

    state, where = checkpoint.state_dict, checkpoint.source
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    try:
        if convert is not None:
            state = convert(state, model)
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that differ: weights of another size of model
        raise EdgevitError(f"weights {where} do not fit {name}: {_first_line(err)}") from None
    for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise EdgevitError(f"weights {where} do not fit {name}: {kind} keys {', '.join(keys[:3])}{more}")


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300]
