"""The bundle manifest (manifest.json) as one typed definition: compile writes it, everything else reads it.

Standard library only (numpy for an example input, on demand); the native core reads the same JSON on a board
(schema: docs/manifest.md). A manifest of another schema version, or with fields missing or unknown,
is refused with one line, so a reader never guesses.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import EdgevitError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """The network the bundle computes."""

    name: str  # timm model name
    num_classes: int  # logits per image; 0 for a features bundle
    embed_dim: int
    depth: int  # transformer blocks
    output: str = "logits"  # logits [N, num_classes] | features: the pooled pre-logits embedding [N, embed_dim]


@dataclass(frozen=True)
class InputSpec:
    """What the model takes and how an image becomes it (timm's eval transform)."""

    shape: list[int]  # [N, 3, H, W]
    dtype: str  # float32: normalized pixels; uint8: raw pixels (normalization folded into the model)
    layout: str  # NCHW
    mean: list[float]  # per channel, on [0, 1] pixels
    std: list[float]
    resize: int  # the short side is resized to this, then `shape[-1]` is center-cropped
    crop_pct: float  # shape[-1] / resize, as timm states it
    interpolation: str  # bicubic | bilinear

    def example(self, seed: int = 0):
        """A fixed pseudo-random batch of this shape and dtype (pixels for uint8 inputs), for timing host-side."""
        import numpy as np

        rng = np.random.default_rng(seed)
        if self.dtype == "uint8":
            return rng.integers(0, 256, tuple(self.shape), dtype=np.uint8)
        return rng.standard_normal(tuple(self.shape)).astype(self.dtype)


@dataclass(frozen=True)
class TomeInfo:
    """Token merging (ToMe) as compiled: fixed per block, so every kernel has a static shape."""

    schedule: list[int]  # tokens merged in each block
    tokens_per_block: list[int]  # tokens entering each block, then after the last one
    gflops: float  # of one image at this schedule


@dataclass(frozen=True)
class QuantInfo:
    """The quantization mode and, for integer modes, the recipe and each linear layer's choice."""

    mode: str  # fp32 | int8 | int8-full
    recipe: dict[str, Any] = field(default_factory=dict)  # observer, outliers, calib_count, ...
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> format, rel_error, ...


@dataclass(frozen=True)
class TargetInfo:
    """Where the code runs: the runtime refuses a bundle whose arch or CPU features do not match."""

    preset: str  # targets/presets/<preset>.toml
    tvm_target: dict[str, Any]  # the TVM target as a dict
    arch: str  # x86_64 | aarch64
    device: str  # cpu | cuda
    required_cpu_features: list[str]  # /proc/cpuinfo flag names (e.g. avx512_vnni, asimddp)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """manifest.json of a bundle."""

    schema_version: int = SCHEMA_VERSION  # bumped on any incompatible change
    model: ModelInfo
    input: InputSpec
    tome: TomeInfo
    quant: QuantInfo
    target: TargetInfo
    versions: dict[str, str]  # edgevit, tvm, torch, timm that built it
    created_utc: str  # ISO 8601
    files: dict[str, str] = field(default_factory=dict)  # bundle-relative path -> sha256 (all but the manifest)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        """A Manifest from parsed JSON; another schema version or a malformed one is an EdgevitError."""
        version = data.get("schema_version") if isinstance(data, dict) else "?"
        if version != SCHEMA_VERSION:
            raise EdgevitError(f"{where}: manifest schema {version} is not the supported version {SCHEMA_VERSION}")
        parts = {"model": ModelInfo, "input": InputSpec, "tome": TomeInfo, "quant": QuantInfo, "target": TargetInfo}
        try:
            fields = {name: value for name, value in data.items() if name not in parts}
            return cls(**fields, **{name: kind(**data[name]) for name, kind in parts.items()})
        except (TypeError, KeyError) as err:
            raise EdgevitError(f"{where}: manifest does not match schema {SCHEMA_VERSION} ({err})") from None
