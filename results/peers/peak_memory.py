"""Peak memory of one contender, measured alone in a fresh interpreter.

Contenders timed in one process share its allocator, libraries and caches, so an RSS taken there
says little about any one of them. Here a new `python -m results.peers.peak_memory` loads the prepared
artifact with its own runtime only, warms up, runs it N times, and reports its peak RSS and the
growth over the interpreter as it started (before anything beyond the standard library).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runtime.bench import status_mb

REPO = Path(__file__).resolve().parents[2]


def measure_peak_rss(artifact_json: str, threads: int, runs: int, spin_wait: bool, timeout_s: float = 900) -> dict:
    """{"peak_rss_mb", "rss_start_mb", "peak_rss_growth_mb"} of one artifact (Artifact.to_json()), or
    {"peak_rss_error": ...} when the probe fails."""
    proc = subprocess.run([sys.executable, "-m", "results.peers.peak_memory", artifact_json, str(threads), str(runs),
                           str(int(spin_wait))],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_rss_error": f"probe exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def _probe(artifact_json: str, threads: int, runs: int, spin_wait: bool) -> dict:
    start_mb = status_mb("VmRSS")
    from results.peers.runners import Artifact, load_runner

    runner = load_runner(Artifact.from_json(artifact_json), threads, spin_wait)
    x = runner.example()
    for _ in range(3 + runs):  # 3 warm-up runs, then the measured ones
        runner.run(x)
    peak_mb = status_mb("VmHWM")
    return {"peak_rss_mb": peak_mb, "rss_start_mb": start_mb, "peak_rss_growth_mb": peak_mb - start_mb}


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")))
