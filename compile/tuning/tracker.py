"""The TVM RPC tracker as tuning sees it: its address and a wait for a board to register.

`--tune-rpc KEY` measures candidates on the board that registered with KEY at the tracker; remote.rpc
(benchmarks over RPC, starting trackers and servers) uses the same pieces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from runtime.errors import EdgevitError


@dataclass(frozen=True)
class Tracker:
    host: str = "127.0.0.1"
    port: int = 9190

    @classmethod
    def parse(cls, text: str) -> "Tracker":
        host, _, port = text.rpartition(":")
        try:
            return cls(host or "127.0.0.1", int(port))
        except ValueError:
            raise EdgevitError(f"--tracker must be HOST:PORT, got '{text}'") from None


def wait_for_key(tracker: Tracker, key: str, timeout_s: float = 120.0) -> None:
    """Block until a server with `key` has registered at the tracker."""
    from tvm import rpc

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            summary = rpc.connect_tracker(tracker.host, tracker.port).summary()
            if summary["queue_info"].get(key, {}).get("free", 0) > 0:
                return
        except (RuntimeError, OSError, ConnectionError):
            pass
        time.sleep(0.5)
    raise EdgevitError(f"no RPC server with key '{key}' registered at {tracker.host}:{tracker.port} within {timeout_s:.0f} s")
