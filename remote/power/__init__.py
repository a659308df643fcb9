"""Power samplers: how to read a board's power, one small module each, behind one Protocol.

A sampler gives the shell command that prints readings on the board (run over SSH beside the
benchmark) and the parser that turns that output into watts. `registry` maps the names used in
farm.toml / target presets to constructors taking the board's power settings.
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


def make_sampler(settings: dict[str, Any]) -> PowerSampler | None:
    """The sampler for a board's `power` settings; None for 'none'."""
    from remote.power import external, ina3221, rapl, tegrastats, vcgencmd

    registry = {
        "ina3221": ina3221.Ina3221Sampler, "tegrastats": tegrastats.TegrastatsSampler,
        "vcgencmd": vcgencmd.VcgencmdSampler, "rapl": rapl.RaplSampler, "external": external.ExternalSampler,
    }
    name = settings.get("sampler", "none")
    if name == "none":
        return None
    options = {k: v for k, v in settings.items() if k != "sampler"}
    return registry[name](**options)
