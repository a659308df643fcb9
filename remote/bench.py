"""Farm benchmark: deploy + on-device bench on many boards in parallel; failures become error records.

Each board gets its own worker with a timeout per attempt and retries with exponential backoff; a
board that is down or fails produces one error record and the others go on. Records are appended
to a JSONL file atomically (`--resume` skips (board, bundle) pairs already measured).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from remote.deploy import deploy
from remote.inventory import Board
from remote.power import make_sampler
from remote.power.monitor import PowerWindow, idle_watts, power_record
from remote.ssh import BoardConnection
from results.records import read_jsonl, write_jsonl
from runtime.bundle import MANIFEST, RUNNER, sha256_file
from runtime.errors import EdgevitError


@dataclass(frozen=True)
class BenchPlan:
    bundle: Path
    warmup: int = 5
    repeat: int = 20
    threads: int | None = None
    images: tuple[Path, ...] = ()  # also run these and record the top-5 (compare boards with the host)
    timeout_s: float = 900.0
    attempts: int = 2
    backoff_s: float = 2.0
    trust_new: bool = False
    runtime: str = "native"  # runtime.bundle.RUNTIMES: the bundle's bin/edgevit-run, or python -m runtime

    def runner(self, board: Board, remote_bundle: str) -> list[str]:
        """The board command that runs `python -m runtime`'s commands for this plan."""
        return [f"{remote_bundle}/{RUNNER}"] if self.runtime == "native" else [board.python, "-m", "runtime"]


def _bench_once(board: Board, plan: BenchPlan) -> dict:
    with BoardConnection(board, trust_new=plan.trust_new) as conn:
        placed = deploy(conn, plan.bundle, plan.runtime)
        image_names = []
        if plan.images:
            from remote.deploy import sync

            sync(conn, {f"images/{p.name}": p for p in plan.images})
            image_names = [f"images/{p.name}" for p in plan.images]
        threads = [] if plan.threads is None else ["--threads", str(plan.threads)]
        runtime = plan.runner(board, placed.remote_bundle)
        bench_argv = [*runtime, "bench", placed.remote_bundle, "--json", "--warmup", str(plan.warmup),
                      "--repeat", str(plan.repeat), *threads]
        sampler = make_sampler(board.power)
        if sampler is None:
            out = conn.check(bench_argv, cwd=board.remote_dir, timeout_s=plan.timeout_s)
            record = json.loads(out.strip().splitlines()[-1])
        else:
            idle = idle_watts(conn, sampler)
            with PowerWindow(conn, sampler) as window:
                out = conn.check(bench_argv, cwd=board.remote_dir, timeout_s=plan.timeout_s)
            record = json.loads(out.strip().splitlines()[-1])
            record.update(power_record(sampler, idle, window.watts(), record["mean_ms"]))
        if image_names:
            out = conn.check([*runtime, "run", placed.remote_bundle, *image_names, "--json", *threads],
                             cwd=board.remote_dir, timeout_s=plan.timeout_s)
            record["top5"] = {name.rsplit("/", 1)[-1]: [e["class"] for e in top]
                              for name, top in json.loads(out.strip().splitlines()[-1]).items()}
        record["uploaded_files"] = len(placed.uploaded)
        record["runtime"] = plan.runtime
        return record


def bench_board(board: Board, plan: BenchPlan, sleep=time.sleep) -> dict:
    """One record for one board: the on-device numbers, or the error after the last attempt."""
    base = {"board": board.name, "preset": board.preset, "bundle": plan.bundle.name,
            "bundle_sha256": sha256_file(plan.bundle / MANIFEST)}
    error = ""
    for attempt in range(1, plan.attempts + 1):
        try:
            record = _bench_once(board, plan)
            return {**base, "status": "ok", "attempts": attempt, **record, "time_utc": _now()}
        except EdgevitError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - any failure of one board must not stop the farm
            error = f"board {board.name}: {err.__class__.__name__}: {err}"
        if attempt < plan.attempts:
            sleep(plan.backoff_s * 2 ** (attempt - 1))
    return {**base, "status": "error", "attempts": plan.attempts, "error": error, "time_utc": _now()}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def bench_farm(boards: list[Board], plan: BenchPlan, results: Path, *, resume: bool = False, on_record=None) -> list[dict]:
    """Bench all boards in parallel and append one record each to `results` (JSONL, atomic)."""
    previous = read_jsonl(results) if results.is_file() else []
    if resume:
        done = {(r["board"], r["bundle_sha256"]) for r in previous if r.get("status") == "ok"}
        digest = sha256_file(plan.bundle / MANIFEST)
        boards = [b for b in boards if (b.name, digest) not in done]
    records = []
    with ThreadPoolExecutor(max_workers=max(1, len(boards))) as pool:
        for record in pool.map(lambda b: bench_board(b, plan), boards):
            records.append(record)
            if on_record is not None:
                on_record(record)
    write_jsonl(results, previous + records)
    return records
