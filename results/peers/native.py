"""edgevit's native runner as a contender: each edgevit bundle's own bin/edgevit-run, as a board runs it.

The runner is a program of its own, so it cannot take turns inside the interleaved loop of this process:
it is timed by its own bench loop (the same fixed input, warm-up and batch-1 timing as `python -m runtime
bench`) in a fresh process right after the interleaved phase, with as many timed runs as every other
contender had, and scored by its own `eval` (its own JPEG decoding and resampling) on the same rows. Its
peak RSS is that process's VmHWM: the whole runtime, no interpreter under it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from results.peers.runners import Artifact
from runtime.bundle import RUNNER, read_manifest

KIND = "edgevit-native"


def has_runner(artifact: Artifact) -> bool:
    """An edgevit bundle that carries bin/edgevit-run (every bundle does)."""
    return artifact.kind == "edgevit" and RUNNER in read_manifest(Path(artifact.path)).files


def _last_json(argv: list[str], timeout_s: float) -> dict:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError((result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def native_record(artifact: Artifact, *, threads: int, runs: int, rows: tuple[int, int | None] | None,
                  images: Path, labels_csv: Path, timeout_s: float = 1800) -> dict:
    """Latency, peak RSS and (with `rows` = (skip, limit)) top-1 / top-5 of the bundle's native runner, as the
    fields of a bench record; {"status": "error", ...} fields when the runner fails."""
    bundle = Path(artifact.path)
    runner = str(bundle / RUNNER)
    common = ["--threads", str(threads), "--json"]
    try:
        bench = _last_json([runner, "bench", str(bundle), "--warmup", "10", "--repeat", str(runs), *common], timeout_s)
        record = {key: bench[key] for key in ("median_ms", "p90_ms", "mean_ms", "n", "peak_rss_mb")}
        if rows is not None:
            skip, limit = rows
            limits = [] if limit is None else ["--limit", str(limit)]
            scores = _last_json([runner, "eval", str(bundle), "--images", str(images), "--labels", str(labels_csv),
                                 "--skip", str(skip), *limits, *common], timeout_s)
            record.update(top1=scores["top1"], top5=scores["top5"])
    except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, json.JSONDecodeError) as err:
        return {"status": "error", "reason": f"{RUNNER}: {err}"}
    return {"status": "ok", **record}
