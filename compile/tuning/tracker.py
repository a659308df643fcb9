"""Waiting at the TVM RPC tracker (runtime.tracker: its address) for a board to register.

`--tune-rpc KEY` measures candidates on the board that registered with KEY at the tracker.
"""

from __future__ import annotations

import time

from runtime.errors import EdgevitError
from runtime.tracker import Tracker


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
