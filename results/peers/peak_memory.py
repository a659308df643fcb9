"""Peak memory of one contender, measured alone in a fresh interpreter.

Contenders timed in one process share its allocator, libraries and caches, so an RSS taken there
says little about any one of them. Here a new `python -m results.peers.peak_memory` loads the prepared
artifact with its own runtime only, warms up, runs it N times, and reports its peak RSS and the
growth over the interpreter as it started (before anything beyond the standard library).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from results.peers.memory import status_mb

if TYPE_CHECKING:
    from runtime.preprocess import Preprocess

REPO = Path(__file__).resolve().parents[2]


def measure_peak_rss(artifact_json: str, preprocess: Preprocess, threads: int, runs: int, spin_wait: bool,
                     timeout_s: float = 900) -> dict:
    """{"peak_rss_mb", "rss_start_mb", "peak_rss_growth_mb"} of one artifact (Artifact.to_json()), or
    {"peak_rss_error": ...} when the probe fails. The input transform is handed over, so the probe never
    imports timm (and torch) to look it up: a contender is charged only for what it loads itself."""
    proc = subprocess.run([sys.executable, "-m", "results.peers.peak_memory", artifact_json,
                           json.dumps(dataclasses.asdict(preprocess), default=str), str(threads), str(runs),
                           str(int(spin_wait))],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_rss_error": f"probe exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def _probe(artifact_json: str, preprocess_json: str, threads: int, runs: int, spin_wait: bool) -> dict:
    start_mb = status_mb("VmRSS")
    artifact = json.loads(artifact_json)
    if artifact["kind"] == "edgevit":  # measured as python -m runtime runs it on a board: no torch or TVM Python
        for name in ("torch", "timm", "onnx", "onnxruntime", "compile", "tvm"):
            sys.modules.setdefault(name, None)
    from results.peers.runners import Artifact, load_runner
    from runtime.preprocess import Preprocess

    fields = json.loads(preprocess_json)
    preprocess = Preprocess(**{k: tuple(v) if isinstance(v, list) else Path(v) if k == "core" and v else v
                               for k, v in fields.items()})
    runner = load_runner(Artifact.from_json(artifact_json), threads, spin_wait, preprocess)
    x = runner.example()
    for _ in range(3 + runs):  # 3 warm-up runs, then the measured ones
        runner.run(x)
    peak_mb = status_mb("VmHWM")
    return {"peak_rss_mb": peak_mb, "rss_start_mb": start_mb, "peak_rss_growth_mb": peak_mb - start_mb}


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1")))
