"""The weights every contender of a measurement loads: the model's stored weights, or a random init.

`results bench --model` and `results sweep --model` take any timm ViT of the supported families.
Only some have weights on this machine (<data dir>/<name>.safetensors); for the others one seeded
random initialisation is written once as a safetensors file in the build folder and every
contender (edgevit's compiles, PyTorch, ONNX Runtime, ...) loads that same file, as it would real
weights. Such a run measures latency only: its accuracy means nothing and is not evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RANDOM_INIT_NOTE = "random init, latency only"
SEED = 0


@dataclass(frozen=True)
class ModelWeights:
    """A checkpoint file of `model` and whether it is a random init (no accuracy to measure)."""

    model: str
    path: Path
    random_init: bool


def model_weights(model: str, build_dir: Path) -> ModelWeights:
    """The stored weights of `model`, else its random init at build_dir/<model>-random-init.safetensors
    (made once; an unknown or unsupported model name fails here with one line, before any work)."""
    from compile.model.models import load_model, model_spec, stored_weights

    model_spec(model)  # an unknown name: one line
    stored = stored_weights(model)
    if stored is not None:
        return ModelWeights(model, stored, random_init=False)
    path = build_dir / f"{model}-random-init.safetensors"
    if not path.is_file():
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(SEED)
        state = {k: v.contiguous() for k, v in load_model(model, pretrained_required=False).state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(state, str(tmp))
        tmp.replace(path)
    return ModelWeights(model, path, random_init=True)
