"""Images handed to the binding (file paths, PIL images, H x W x 3 uint8 arrays) as the C API takes them.

An array is passed without a copy when its pixels are interleaved (3 bytes apart, channels 1 byte apart): any row
stride, views, crops and bottom-up (flipped) rows included; a channel-reversed view (`rgb[..., ::-1]`) is passed as
the other channel order. Only other layouts (every other column, channels first, ...) are copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.core import BGR, RGB
from runtime.errors import EdgevitError

ORDERS = {"rgb": RGB, "bgr": BGR}


@dataclass(frozen=True)
class PixelArgs:
    """The pixel arguments of edgevit_run_image & co; `array` keeps the memory alive during the call."""

    pointer: int
    width: int
    height: int
    stride: int
    order: int
    array: np.ndarray

    def args(self) -> tuple[int, int, int, int, int]:
        return self.pointer, self.width, self.height, self.stride, self.order


def pixel_args(image: Any, order: str = "rgb") -> PixelArgs:
    """The C API's view of an H x W x 3 uint8 array (or a PIL image, converted to RGB) in channel `order`."""
    if order not in ORDERS:
        raise EdgevitError(f"pixel order {order!r} is not one of {', '.join(ORDERS)}")
    if hasattr(image, "convert") and hasattr(image, "getbands"):  # a PIL image; PIL itself is not needed here
        image, order = np.asarray(image.convert("RGB")), "rgb"
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shown = f"{image.shape} {image.dtype} array" if isinstance(image, np.ndarray) else type(image).__name__
        raise EdgevitError(f"an image is a file path, a PIL image or an H x W x 3 uint8 array, not a {shown}")
    code = ORDERS[order]
    if image.strides[1:] == (3, -1):  # channels reversed in place: the same bytes in the other order
        image, code = image[..., ::-1], BGR + RGB - code
    if image.strides[1:] != (3, 1):
        image = np.ascontiguousarray(image)
    height, width, _ = image.shape
    return PixelArgs(image.ctypes.data, width, height, image.strides[0], code, image)


def is_path(image: Any) -> bool:
    return isinstance(image, (str, Path))
