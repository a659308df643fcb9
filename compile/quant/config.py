"""QuantConfig: how a model is quantized, validated before any heavy work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compile.data import CALIBRATION_ROWS
from compile.quant.formats import MIXED_FORMATS
from runtime.errors import EdgevitError

# int8: integer GEMMs, float nonlinearities; int8-full: integer only; w4a8: int8 with 4-bit GEMM weights;
# mixed: a format per GEMM (formats.MIXED_FORMATS) chosen under a budget (--max-drop or --size-mb)
QUANT_MODES = ("fp32", "int8", "int8-full", "w4a8", "mixed")
LOW_BIT_MODES = ("w4a8", "mixed")
W4_GROUPS = {"channel": 0, "32": 32, "64": 64, "128": 128}  # --w4-group: input rows per int4 scale (0: per column)
W4_ROUNDINGS = ("gptq", "rtn", "block")  # block: gptq, then each block's codes learned (compile.quant.block_rounding)
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
    w4_group: int = 32  # int4 weights: input rows per scale group, 0 = one scale per output column
    w4_rounding: str = "gptq"  # gptq: error-compensating rounding with the calibration Hessian; rtn: to nearest;
    # block: gptq, then each transformer block's codes learned against its float output
    max_drop: float | None = None  # mixed: top-1 points the chosen formats may cost (estimated on held-out images)
    size_mb: float | None = None  # mixed: or the most MB the model's parameters may take
    formats: tuple[str, ...] | None = None  # mixed: the formats to choose from (None: all the target runs)

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
        self._check_low_bit()

    def _check_low_bit(self) -> None:
        if self.w4_group not in W4_GROUPS.values():
            raise EdgevitError(f"--w4-group must be one of {', '.join(W4_GROUPS)}, got {self.w4_group}")
        if self.w4_rounding not in W4_ROUNDINGS:
            raise EdgevitError(f"--w4-rounding must be one of {', '.join(W4_ROUNDINGS)}, got '{self.w4_rounding}'")
        if self.w4_rounding == "block" and self.mode != "w4a8":
            raise EdgevitError(f"--w4-rounding block learns the codes of all-4-bit blocks: it needs --quant w4a8 "
                               f"(got --quant {self.mode})")
        budgets = [flag for flag, value in (("--max-drop", self.max_drop), ("--size-mb", self.size_mb)) if value is not None]
        if self.mode != "mixed":
            given = budgets + (["--formats"] if self.formats is not None else [])
            if given:
                raise EdgevitError(f"{given[0]} chooses a format per layer: it needs --quant mixed (got --quant {self.mode})")
            return
        if len(budgets) != 1:
            raise EdgevitError("--quant mixed needs one budget: --max-drop POINTS or --size-mb MB" if not budgets
                               else "--quant mixed takes one budget: --max-drop or --size-mb, not both")
        if self.max_drop is not None and self.max_drop < 0:
            raise EdgevitError(f"--max-drop must not be negative, got {self.max_drop}")
        if self.size_mb is not None and self.size_mb <= 0:
            raise EdgevitError(f"--size-mb must be positive, got {self.size_mb}")
        if self.keep_float or self.keep_float_error is not None:
            raise EdgevitError("--quant mixed chooses the float layers itself: drop --keep-float / --keep-float-error")
        unknown = [name for name in self.formats or () if name not in MIXED_FORMATS]
        if unknown or self.formats == ():
            problem = f"unknown format '{unknown[0]}'" if unknown else "no format given"
            raise EdgevitError(f"--formats: {problem}; available: {', '.join(MIXED_FORMATS)}")

    @property
    def low_bit(self) -> bool:
        """Whether GEMMs may get 4-bit weights (then calibration collects each GEMM input's X^T X)."""
        return self.mode in LOW_BIT_MODES

    @property
    def layer_rounding(self) -> str:
        """How each GEMM's int4 weight is rounded on its own (block rounding starts from GPTQ's)."""
        return "gptq" if self.w4_rounding == "block" else self.w4_rounding

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
            **({"w4_group": self.w4_group, "w4_rounding": self.w4_rounding} if self.low_bit else {}),
            **({"max_drop": self.max_drop, "size_mb": self.size_mb, "formats": list(self.formats or ())}
               if self.mode == "mixed" else {}),
        }
