"""Image -> model input, as the bundle's manifest describes it (timm's eval transform, in numpy).

resize the short side to int(size / crop_pct) (bicubic), center crop `size`, scale to [0, 1],
normalize per channel, CHW float32. Matches timm/torchvision for the models edgevit supports.
Integer bundles take the cropped pixels as they are (CHW uint8): their first layer has the
normalization folded into its weights, so the input carries no rounding at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from runtime.errors import EdgevitError
from runtime.manifest import InputSpec

RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocess:
    """The input transform of a model: crop size, resize size, mean/std, interpolation."""

    size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    dtype: str = "float32"  # "uint8": raw pixels, normalization folded into the model

    @classmethod
    def from_manifest(cls, spec: InputSpec) -> "Preprocess":
        return cls(size=spec.shape[-1], resize=spec.resize, mean=tuple(spec.mean), std=tuple(spec.std),
                   interpolation=spec.interpolation, dtype=spec.dtype)

    def load(self, path: str | Path, out: np.ndarray | None = None) -> np.ndarray:
        """Read one image into `out` ([3, size, size] of self.dtype, allocated when None)."""
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise EdgevitError(f"cannot read image {path}: {err.__class__.__name__}: {err}") from None
        return self.transform(img, out)

    def transform(self, img: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """Resize, crop and normalize a PIL RGB image into `out` ([3, size, size] of self.dtype)."""
        width, height = img.size
        scale = self.resize / min(width, height)
        new_size = (self.resize, int(height * scale)) if width <= height else (int(width * scale), self.resize)
        img = img.resize(new_size, RESAMPLING[self.interpolation])
        left = int(round((new_size[0] - self.size) / 2))
        top = int(round((new_size[1] - self.size) / 2))
        img = img.crop((left, top, left + self.size, top + self.size))
        if out is None:
            out = np.empty((3, self.size, self.size), dtype=self.dtype)
        if self.dtype == "uint8":
            out[...] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
            return out
        pixels = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
        inv_std = (1.0 / (np.asarray(self.std, dtype=np.float32) * 255.0)).reshape(3, 1, 1)
        np.subtract(pixels, mean, out=out)
        np.multiply(out, inv_std, out=out)
        return out
