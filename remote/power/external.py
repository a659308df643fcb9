"""An external meter (e.g. a USB power meter on a Pi 4): a command on the board that prints watts,
one number per line, as often as it can."""

from __future__ import annotations


class ExternalSampler:
    name = "external"

    def __init__(self, command: str):
        self.command_line = command

    def command(self, interval_s: float) -> str:
        return f"while :; do {self.command_line}; sleep {interval_s}; done"

    def watts(self, output: str) -> list[float]:
        readings = []
        for line in output.splitlines():
            try:
                readings.append(float(line.strip()))
            except ValueError:
                continue
        return readings
