"""edgevit runtime: the minimal on-device part (numpy, pillow and the TVM runtime only).

Copied to a board as-is; it loads a bundle, checks it fits the device, and runs inference.
"""

__version__ = "0.1.0"
