"""Power samplers: how to read a board's power, one small module each, behind one Protocol.

A sampler gives the shell command that prints readings on the board (run over SSH beside the
benchmark) and the parser that turns that output into watts. `REGISTRY` maps the names used in
farm.toml to the classes, constructed with the board's power settings.
"""

from __future__ import annotations

from typing import Any, Protocol


class PowerSampler(Protocol):
    """Reads a board's power as a stream of text lines."""

    name: str

    def command(self, interval_s: float) -> str:
        """Shell command printing one reading per interval until killed."""

    def watts(self, output: str) -> list[float]:
        """Board power in watts for each complete reading in `output`."""


# sampler name (farm.toml's `sampler`) -> (module of remote.power, class): the one list of their names
REGISTRY = {
    "ina3221": ("ina3221", "Ina3221Sampler"), "tegrastats": ("tegrastats", "TegrastatsSampler"),
    "vcgencmd": ("vcgencmd", "VcgencmdSampler"), "rapl": ("rapl", "RaplSampler"), "external": ("external", "ExternalSampler"),
}
SAMPLER_NAMES = ("none", *REGISTRY)


def make_sampler(settings: dict[str, Any]) -> PowerSampler | None:
    """The sampler for a board's `power` settings; None for 'none'."""
    import importlib

    name = settings.get("sampler", "none")
    if name == "none":
        return None
    module, cls = REGISTRY[name]
    options = {k: v for k, v in settings.items() if k != "sampler"}
    return getattr(importlib.import_module(f"remote.power.{module}"), cls)(**options)
