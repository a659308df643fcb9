"""Jetson INA3221 current/voltage monitors through hwmon (JetPack 5/6), rails found by their label.

/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in{N}_label names a rail, in{N}_input is its voltage
(mV) and curr{N}_input its current (mA). The default rail is the board input (Orin Nano: VDD_IN;
AGX Orin: VIN_SYS_5V0 is missing its current on some revisions, so list rails explicitly there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GLOB = "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"


@dataclass
class Ina3221Sampler:
    rails: list[str] = field(default_factory=lambda: ["VDD_IN"])
    root_glob: str = GLOB
    name: str = "ina3221"

    def command(self, interval_s: float) -> str:
        # one reading = a line per channel "label mV mA", then a line "--"
        return (
            f"while :; do for d in {self.root_glob}; do for l in \"$d\"/in*_label; do "
            "n=${l##*/in}; n=${n%_label}; "
            "echo \"$(cat \"$l\") $(cat \"$d/in${n}_input\") $(cat \"$d/curr${n}_input\" 2>/dev/null || echo 0)\"; "
            f"done; done; echo --; sleep {interval_s}; done"
        )

    def watts(self, output: str) -> list[float]:
        readings, current = [], {}
        for line in output.splitlines():
            if line.strip() == "--":
                if current:
                    readings.append(sum(current.get(rail, 0.0) for rail in self.rails))
                current = {}
                continue
            parts = line.split()
            if len(parts) == 3:
                label, millivolts, milliamps = parts
                current[label] = float(millivolts) * float(milliamps) / 1e6
        return readings
