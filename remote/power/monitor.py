"""Sampling a board's power over SSH while something else runs there.

The sampler's command runs in its own SSH channel beside the benchmark; its output is collected in
a background thread and parsed when the window closes. An idle window before the benchmark gives
the baseline, so energy per inference can be reported both gross and above idle.
"""

from __future__ import annotations

import threading
import time

from remote.power import PowerSampler
from remote.ssh import BoardConnection


class PowerWindow:
    """Collect a sampler's output on the board between start() and stop()."""

    def __init__(self, conn: BoardConnection, sampler: PowerSampler, interval_s: float = 0.1):
        self.conn, self.sampler, self.interval_s = conn, sampler, interval_s
        self._chunks: list[bytes] = []

    def __enter__(self) -> "PowerWindow":
        self.channel = self.conn.client.get_transport().open_session()
        self.channel.exec_command(self.sampler.command(self.interval_s))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        while True:
            data = self.channel.recv(65536)
            if not data:
                return
            self._chunks.append(data)

    def __exit__(self, *exc) -> None:
        self.channel.close()
        self._reader.join(timeout=5)

    def watts(self) -> list[float]:
        return self.sampler.watts(b"".join(self._chunks).decode(errors="replace"))


def idle_watts(conn: BoardConnection, sampler: PowerSampler, seconds: float = 2.0) -> list[float]:
    """Readings while the board does nothing (the baseline)."""
    with PowerWindow(conn, sampler) as window:
        time.sleep(seconds)
    return window.watts()


def power_record(sampler: PowerSampler, idle: list[float], busy: list[float], mean_ms: float) -> dict:
    """Mean power, idle baseline and energy per inference (gross and above idle), with units in names."""
    if not busy:
        return {"power_sampler": sampler.name, "power_error": "no readings during the benchmark"}
    busy_w = sum(busy) / len(busy)
    idle_w = sum(idle) / len(idle) if idle else None
    record = {"power_sampler": sampler.name, "power_mean_w": busy_w, "power_samples": len(busy),
              "energy_per_inference_mj": busy_w * mean_ms, "idle_power_w": idle_w}
    if idle_w is not None:
        record["energy_above_idle_per_inference_mj"] = (busy_w - idle_w) * mean_ms
    return record
