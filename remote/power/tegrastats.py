"""Jetson tegrastats: rails printed as `NAME cur/avg` in mW (JetPack 5/6: `VDD_IN 5085mW/5085mW`;
JetPack 4: `POM_5V_IN 3040/3040`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?\b")


@dataclass
class TegrastatsSampler:
    rail: str = "VDD_IN"
    name: str = "tegrastats"

    def command(self, interval_s: float) -> str:
        return f"tegrastats --interval {max(1, int(interval_s * 1000))}"

    def watts(self, output: str) -> list[float]:
        readings = []
        for line in output.splitlines():
            rails = {name: int(cur) for name, cur, _avg in RAIL.findall(line)}
            rail = self.rail if self.rail in rails else next((r for r in rails if r.endswith("_IN")), None)
            if rail is not None:
                readings.append(rails[rail] / 1000.0)
        return readings
