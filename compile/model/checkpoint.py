"""Checkpoints as people have them: a state dict in safetensors or a PyTorch file, a training
checkpoint that holds one (timm's train.py writes `state_dict` and `state_dict_ema`), a folder in
timm's Hugging Face layout (config.json with architecture, label names, pretrained config and model_args,
beside model.safetensors or pytorch_model.bin), or a transformers ViT / DeiT image-classification folder
(config.json with model_type, mapped by compile.model.hf_transformers).

PyTorch files are read with `torch.load(weights_only=True)`: a file that needs arbitrary unpickling is
refused, never executed. EMA weights are preferred when a checkpoint has both (they evaluate better);
wrapper prefixes (`module.` from DataParallel / DDP, `model.`) are stripped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import EdgevitError

PYTORCH_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".ckpt")
# Where training checkpoints keep the state dict, best first (EMA before raw weights).
STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
WRAPPER_PREFIXES = ("module.", "model.")
TRANSFORMERS_TYPES = ("vit", "deit")  # config.json model_type of the transformers folders compile.model.hf_transformers maps


@dataclass(frozen=True)
class Checkpoint:
    """A state dict and where in the file it was found (for the compile log)."""

    state_dict: dict
    source: str  # e.g. "state_dict_ema of run.pth.tar"
    architecture: str | None = None  # a folder's config.json names the timm model
    label_names: list[str] | None = None
    preprocessing: dict = field(default_factory=dict)  # image_size, mean, std, crop_pct, interpolation from config.json
    model_args: dict = field(default_factory=dict)  # timm.create_model arguments replacing the registered ones (depth, ...)

    @property
    def num_classes(self) -> int:
        """Rows of the classifier head; 0 when the checkpoint has no head (a feature extractor)."""
        head = self.state_dict.get("head.weight")
        return 0 if head is None else int(head.shape[0])


def read_checkpoint(path: Path) -> Checkpoint:
    """The state dict of a safetensors or PyTorch file; one clear line when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        return _from_timm_folder(path)
    if not path.is_file():
        raise EdgevitError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return Checkpoint(_strip_wrappers(load_file(str(path))), path.name)
        except (SafetensorError, OSError) as err:
            raise EdgevitError(f"weights {path}: not a readable safetensors file ({err})") from None
    if not path.name.endswith(PYTORCH_SUFFIXES):
        raise EdgevitError(f"weights {path}: expected .safetensors or a PyTorch file ({', '.join(PYTORCH_SUFFIXES)})")
    return _from_pytorch_file(path)


def _from_timm_folder(path: Path) -> Checkpoint:
    """timm's Hugging Face layout: config.json plus model.safetensors (preferred) or pytorch_model.bin."""
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise EdgevitError(f"weights folder {path}: no config.json (expected timm's Hugging Face layout)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdgevitError(f"weights folder {path}: config.json is not JSON ({err})") from None
    kind = config.get("model_type")
    if "architecture" not in config and kind not in TRANSFORMERS_TYPES:
        what = f"a '{kind}' transformers folder" if kind else "no 'architecture' or 'model_type'"
        raise EdgevitError(f"weights folder {path}: {what}; edgevit reads timm's layout (config.json 'architecture') "
                           f"and transformers' {' / '.join(TRANSFORMERS_TYPES)} image classifiers")
    weights = next((path / name for name in ("model.safetensors", "pytorch_model.bin") if (path / name).is_file()), None)
    if weights is None:
        raise EdgevitError(f"weights folder {path}: no model.safetensors or pytorch_model.bin beside config.json")
    state = read_checkpoint(weights).state_dict
    source = f"{weights.name} of {path.name}/"
    if "architecture" not in config:
        from compile.model import hf_transformers as hf

        name, model_args = hf.timm_structure(config, str(path))
        return Checkpoint(hf.timm_state_dict(state, kind), f"{source} (transformers {kind}, as timm's {name})", name,
                          hf.label_names(config), hf.preprocessing(path, config), model_args)
    return Checkpoint(state, source, config["architecture"], config.get("label_names"),
                      preprocessing_of(config.get("pretrained_cfg", {})), config.get("model_args", {}))


def preprocessing_of(cfg: dict) -> dict:
    """ModelSpec fields from a timm pretrained config (as a dict): the ones it sets, tuples for sequences."""
    values = {"image_size": cfg["input_size"][-1] if cfg.get("input_size") else None, "mean": cfg.get("mean"),
              "std": cfg.get("std"), "crop_pct": cfg.get("crop_pct"), "interpolation": cfg.get("interpolation")}
    return {key: tuple(v) if isinstance(v, (list, tuple)) else v for key, v in values.items() if v is not None}


def _from_pytorch_file(path: Path) -> Checkpoint:
    import pickle

    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise EdgevitError(f"weights {path}: refused, it needs arbitrary unpickling ({str(err).splitlines()[0][:120]}); "
                           "save the model's state_dict() (or use safetensors)") from None
    except (RuntimeError, OSError, EOFError) as err:
        raise EdgevitError(f"weights {path}: not a readable PyTorch file ({str(err).splitlines()[0][:160]})") from None
    if not isinstance(data, dict):
        raise EdgevitError(f"weights {path}: holds a {type(data).__name__}, not a state dict or a training checkpoint")
    for key in STATE_DICT_KEYS:
        if isinstance(data.get(key), dict) and _is_state_dict(data[key]):
            return Checkpoint(_strip_wrappers(data[key]), f"{key} of {path.name}")
    if _is_state_dict(data):
        return Checkpoint(_strip_wrappers(data), path.name)
    raise EdgevitError(f"weights {path}: no state dict in it (looked for tensors, or under {', '.join(STATE_DICT_KEYS)})")


def _is_state_dict(data: dict) -> bool:
    import torch

    return bool(data) and all(isinstance(v, torch.Tensor) for v in data.values())


def _strip_wrappers(state: dict) -> dict:
    """Remove a prefix every key shares (`module.`, `model.`), repeatedly (`module.model.`)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(key.startswith(prefix) for key in state):
                state = {key[len(prefix):]: value for key, value in state.items()}
                stripped = True
    return state
