"""The TVM RPC path: a tracker on the host, RPC servers on boards (registered with a key), and
benchmarks / MetaSchedule measurements run on a board through them.

A board runs `python3 -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY` (README, "Setting up a
board"); the host asks the tracker for a session with that key, uploads the compiled library and
times it on the board with the Relax VM's time_evaluator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from runtime.errors import EdgevitError
from runtime.tracker import Tracker


def tracker_command(tracker: Tracker) -> list[str]:
    """argv that runs a TVM RPC tracker in the foreground."""
    return [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", tracker.host, "--port", str(tracker.port),
            "--port-end", str(tracker.port + 1)]


def session(tracker: Tracker, key: str, timeout_s: float = 600.0):
    """An RPC session on a board with `key`, via the tracker."""
    from tvm import rpc

    try:
        return rpc.connect_tracker(tracker.host, tracker.port).request(key, priority=1, session_timeout=int(timeout_s))
    except (RuntimeError, OSError, ConnectionError) as err:
        reason = str(err).splitlines()[0]
        raise EdgevitError(f"RPC: no session for key '{key}' at {tracker.host}:{tracker.port} ({reason})") from None


def rpc_bench(tracker: Tracker, key: str, bundle: Path, *, number: int = 1, repeat: int = 5) -> dict:
    """Upload a bundle's library to a board over RPC and time `main` there (batch 1, milliseconds)."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from runtime.bundle import LIBRARY, verified_manifest

    manifest = verified_manifest(bundle)
    remote = session(tracker, key)
    remote.upload(str(bundle / LIBRARY))
    library = remote.load_module(LIBRARY)
    device = remote.cuda(0) if manifest.target.device == "cuda" else remote.cpu(0)
    vm = VirtualMachine(library, device)
    x = tvm.runtime.tensor(manifest.input.example(), device)
    vm.set_input("main", x)
    timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat)
    times_ms = np.asarray(timer("main").results) * 1e3
    return {"key": key, "bundle": bundle.name, "median_ms": float(np.median(times_ms)),
            "mean_ms": float(times_ms.mean()), "min_ms": float(times_ms.min()), "n": len(times_ms), "via": "rpc"}


def start_server_argv(python: list[str], tracker: Tracker, key: str) -> list[str]:
    """argv (after the board's python) for an RPC server that registers with the tracker."""
    return [*python, "-m", "tvm.exec.rpc_server", "--tracker", f"{tracker.host}:{tracker.port}", "--key", key,
            "--host", "127.0.0.1"]


def start_tracker(tracker: Tracker) -> subprocess.Popen:
    """Start a tracker process and wait until it accepts connections."""
    import socket

    process = subprocess.Popen(tracker_command(tracker), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection((tracker.host, tracker.port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise EdgevitError(f"RPC tracker failed to start: {process.stderr.read().decode()[-500:]}") from None
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the tracker serves from a worker child: end the whole group
    process.wait()
    raise EdgevitError(f"RPC tracker did not listen on {tracker.host}:{tracker.port}")
