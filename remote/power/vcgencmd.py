"""Raspberry Pi 5 PMIC: `vcgencmd pmic_read_adc` prints each rail's current (`NAME_A current(n)=...A`)
and voltage (`NAME_V volt(n)=...V`); board power is the sum of current x voltage over rails."""

from __future__ import annotations

import re
from dataclasses import dataclass

READING = re.compile(r"^\s*(\S+)_([AV]) (?:current|volt)\(\d+\)=([\d.]+)[AV]\s*$")


@dataclass
class VcgencmdSampler:
    name: str = "vcgencmd"

    def command(self, interval_s: float) -> str:
        return f"while :; do vcgencmd pmic_read_adc; echo --; sleep {interval_s}; done"

    def watts(self, output: str) -> list[float]:
        readings, amps, volts = [], {}, {}
        for line in output.splitlines():
            if line.strip() == "--":
                if amps:
                    readings.append(sum(a * volts[r] for r, a in amps.items() if r in volts))
                amps, volts = {}, {}
                continue
            m = READING.match(line)
            if m:
                (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
        return readings
