"""QuantConfig: how a model is quantized, validated before any heavy work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compile.data import CALIBRATION_ROWS
from runtime.errors import EdgevitError

QUANT_MODES = ("fp32", "int8", "int8-full")  # int8: integer GEMMs, float nonlinearities; int8-full: integer only
OBSERVERS = ("minmax", "percentile", "mse")
WEIGHT_SCALES = ("channel", "tensor")
MIN_CALIB_IMAGES = 8  # fewer cannot give stable activation ranges


@dataclass(frozen=True)
class QuantConfig:
    """Post-training quantization settings (see compile.quant)."""

    mode: str = "fp32"  # one of QUANT_MODES; fp32 leaves the model in float (the other fields are unused)
    calib_images: Path | None = None  # None: the data directory's calibration split
    calib_count: int = CALIBRATION_ROWS  # the whole calibration split
    observer: str = "mse"
    outliers: bool = True  # per-channel LayerNorm output scales folded into the next weights
    weight_scales: str = "channel"
    keep_float: int = 0  # keep the K most sensitive linear layers in float32
    keep_float_error: float | None = None  # or every linear layer whose relative error exceeds this
    fc2_groups: int = 1  # power-of-two channel groups for fc2 inputs (Tender); 1: one per-tensor scale

    def __post_init__(self) -> None:
        if self.mode not in QUANT_MODES:
            raise EdgevitError(f"unknown quantization mode '{self.mode}'; available: {', '.join(QUANT_MODES)}")
        if self.observer not in OBSERVERS:
            raise EdgevitError(f"unknown observer '{self.observer}'; available: {', '.join(OBSERVERS)}")
        if self.weight_scales not in WEIGHT_SCALES:
            raise EdgevitError(f"--weight-scales must be one of {', '.join(WEIGHT_SCALES)}")
        if self.calib_count < MIN_CALIB_IMAGES:
            raise EdgevitError(f"--calib-count {self.calib_count}: need at least {MIN_CALIB_IMAGES} calibration images")
        if self.keep_float < 0:
            raise EdgevitError(f"--keep-float must not be negative, got {self.keep_float}")
        if self.keep_float_error is not None and self.keep_float_error <= 0:
            raise EdgevitError(f"--keep-float-error must be positive, got {self.keep_float_error}")
        if self.mode == "int8-full" and (self.keep_float or self.keep_float_error is not None):
            raise EdgevitError("int8-full is integer only: --keep-float needs --quant int8")
        if not 1 <= self.fc2_groups <= 8:
            raise EdgevitError(f"--fc2-groups must be in 1..8, got {self.fc2_groups}")

    @property
    def is_integer(self) -> bool:
        """Whether the model is quantized at all (int8 or int8-full)."""
        return self.mode != "fp32"

    def summary(self) -> dict:
        """What the manifest records about the recipe."""
        return {
            "observer": self.observer, "outliers": self.outliers, "weight_scales": self.weight_scales,
            "calib_count": self.calib_count, "keep_float": self.keep_float, "keep_float_error": self.keep_float_error,
            "fc2_groups": self.fc2_groups,
        }
