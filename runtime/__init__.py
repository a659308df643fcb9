"""edgevit runtime: the on-device part, a thin layer on each bundle's native core (lib/libedgevit.so).

Copied to a board as-is; it needs numpy and nothing else:

    import runtime
    with runtime.Model("bundle") as model:
        print(model.classify("cat.jpg"))
"""

__version__ = "0.1.0"
__all__ = ["EdgevitError", "Model", "Prediction"]

from runtime.errors import EdgevitError


def __getattr__(name: str):
    """Model and Prediction load on first use (numpy and ctypes), so `runtime.errors` stays light."""
    if name in ("Model", "Prediction"):
        from runtime import model

        return getattr(model, name)
    raise AttributeError(name)
