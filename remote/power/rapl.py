"""x86 RAPL: /sys/class/powercap/intel-rapl:N/energy_uj counts microjoules; power from successive
readings (the counter wraps at max_energy_range_uj)."""

from __future__ import annotations

from dataclasses import dataclass

DOMAIN = "/sys/class/powercap/intel-rapl:0"


@dataclass
class RaplSampler:
    domain: str = DOMAIN
    name: str = "rapl"

    def command(self, interval_s: float) -> str:
        return (f"m=$(cat {self.domain}/max_energy_range_uj); "
                f"while :; do echo \"$(date +%s%N) $(cat {self.domain}/energy_uj) $m\"; sleep {interval_s}; done")

    def watts(self, output: str) -> list[float]:
        samples = [tuple(int(v) for v in line.split()) for line in output.splitlines() if len(line.split()) == 3]
        readings = []
        for (t0, e0, wrap), (t1, e1, _) in zip(samples, samples[1:]):
            energy_uj = e1 - e0 if e1 >= e0 else e1 + wrap - e0
            if t1 > t0:
                readings.append(energy_uj / 1e6 / ((t1 - t0) / 1e9))
        return readings
