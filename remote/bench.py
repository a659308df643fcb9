"""Farm benchmark: deploy + on-device bench on many boards, at most N at a time; failures become error records.

Each board gets a worker with a timeout per attempt and retries with exponential backoff; a board that
is down or fails produces one error record and the others go on. Each record is appended to the JSONL
file (one line, fsynced, by the farm's own thread) the moment its board finishes, so an interrupt or a
crash keeps every finished board; `--resume` skips boards that already measured this bundle. Ctrl-C /
SIGTERM stops the boards in flight cleanly: their commands end on the board, uploads remove their
partial file, connections close, and no record is written for them.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from remote.deploy import deploy
from remote.inventory import Board
from remote.power import make_sampler
from remote.power.monitor import PowerWindow, idle_watts, power_record
from remote.ssh import BoardConnection
from results.records import RecordLog
from runtime.bundle import MANIFEST, RUNNER, sha256_file
from runtime.errors import EdgevitError

STOP_GRACE_S = 10.0  # how long a stopped farm waits for its boards' commands to end before closing their connections


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


class FarmProgress(Protocol):
    """What a farm run reports as it goes (remote.progress shows it live)."""

    def queued(self, boards: list[Board]) -> None:
        """The boards this run will bench (after --resume left out those already measured)."""

    def phase(self, board: str, text: str) -> None:
        """A board's worker moved on (connecting, deploying, benchmarking, retry...); called from that worker."""

    def finished(self, record: dict) -> None:
        """A board's record is on disk."""


class _Quiet:
    def queued(self, boards: list[Board]) -> None:
        pass

    def phase(self, board: str, text: str) -> None:
        pass

    def finished(self, record: dict) -> None:
        pass


class FarmStop:
    """Set once by the farm's thread (Ctrl-C / SIGTERM): aborts the connections open at that moment and any
    opened later, and wakes workers sleeping before a retry."""

    def __init__(self):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._open: set[BoardConnection] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when the farm was stopped meanwhile."""
        return self._event.wait(seconds)

    @contextmanager
    def watching(self, conn: BoardConnection) -> Iterator[BoardConnection]:
        with self._lock:
            self._open.add(conn)
        if self._event.is_set():  # stopped while this connection was being opened
            conn.abort()
        try:
            yield conn
        finally:
            with self._lock:
                self._open.discard(conn)

    def set(self) -> None:
        self._event.set()
        for conn in self._connections():
            conn.abort()

    def close_all(self) -> None:
        """Close the connections still open (their blocked calls return with an error), after abort() had its chance."""
        for conn in self._connections():
            conn.close()

    def _connections(self) -> list[BoardConnection]:
        with self._lock:
            return list(self._open)


def _bench_once(conn: BoardConnection, plan: BenchPlan, phase) -> dict:
    board = conn.board
    phase("deploying")
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
        phase("benchmarking")
        out = conn.check(bench_argv, cwd=board.remote_dir, timeout_s=plan.timeout_s)
        record = json.loads(out.strip().splitlines()[-1])
    else:
        phase("idle power")
        idle = idle_watts(conn, sampler)
        phase("benchmarking")
        with PowerWindow(conn, sampler) as window:
            out = conn.check(bench_argv, cwd=board.remote_dir, timeout_s=plan.timeout_s)
        record = json.loads(out.strip().splitlines()[-1])
        record.update(power_record(sampler, idle, window.watts(), record["mean_ms"]))
    if image_names:
        phase("top-5 on the images")
        out = conn.check([*runtime, "run", placed.remote_bundle, *image_names, "--json", *threads],
                         cwd=board.remote_dir, timeout_s=plan.timeout_s)
        record["top5"] = {name.rsplit("/", 1)[-1]: [e["class"] for e in top]
                          for name, top in json.loads(out.strip().splitlines()[-1]).items()}
    record["uploaded_files"] = len(placed.uploaded)
    record["runtime"] = plan.runtime
    return record


def bench_board(board: Board, plan: BenchPlan, stop: FarmStop | None = None,
                progress: FarmProgress | None = None) -> dict | None:
    """One record for one board: the on-device numbers, or the error after the last attempt; None when the
    farm was stopped before the board finished (its connection aborted: nothing left running there)."""
    stop = stop or FarmStop()
    progress = progress or _Quiet()

    def phase(text: str) -> None:
        progress.phase(board.name, text)

    base = {"board": board.name, "preset": board.preset, "bundle": plan.bundle.name,
            "bundle_sha256": sha256_file(plan.bundle / MANIFEST)}
    error = ""
    for attempt in range(1, plan.attempts + 1):
        phase("connecting" if attempt == 1 else f"connecting (attempt {attempt})")
        try:
            with BoardConnection(board, trust_new=plan.trust_new) as conn, stop.watching(conn):
                record = _bench_once(conn, plan, phase)
            return {**base, "status": "ok", "attempts": attempt, **record, "time_utc": _now()}
        except EdgevitError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - any failure of one board must not stop the farm
            error = f"board {board.name}: {err.__class__.__name__}: {err}"
        if stop.is_set():
            return None
        if attempt < plan.attempts:
            delay_s = plan.backoff_s * 2 ** (attempt - 1)
            phase(f"retry in {delay_s:.0f} s: {error.removeprefix(f'board {board.name}: ')}")
            if stop.wait(delay_s):
                return None
    return {**base, "status": "error", "attempts": plan.attempts, "error": error, "time_utc": _now()}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def bench_farm(boards: list[Board], plan: BenchPlan, results: Path, *, resume: bool = False, parallel: int = 8,
               progress: FarmProgress | None = None) -> list[dict]:
    """Bench `boards`, `parallel` at a time, appending each board's record to `results` as it finishes;
    returns this run's records. A KeyboardInterrupt (Ctrl-C, or SIGTERM under sigterm_as_interrupt), or any
    other exception in this thread, stops the boards in flight and is raised again once they are stopped, every
    finished record kept."""
    progress = progress or _Quiet()
    stop = FarmStop()
    records: list[dict] = []
    with RecordLog(results) as log:
        if resume:
            digest = sha256_file(plan.bundle / MANIFEST)
            done = {r["board"] for r in log.records() if r.get("status") == "ok" and r.get("bundle_sha256") == digest}
            boards = [b for b in boards if b.name not in done]
        progress.queued(boards)
        kept: set[Future] = set()

        def keep(future: Future) -> None:
            if future in kept or future.cancelled():
                return
            kept.add(future)  # before writing: a record is written once, even when an interrupt lands here
            record = future.result()
            if record is not None:
                log.append(record)
                records.append(record)
                progress.finished(record)

        pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(boards))))
        futures: list[Future] = []
        try:
            futures.extend(pool.submit(bench_board, board, plan, stop, progress) for board in boards)
            for future in as_completed(futures):
                keep(future)
        except BaseException:  # Ctrl-C, SIGTERM, or the results file failing: stop the boards, keep what finished
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            if wait(futures, timeout=STOP_GRACE_S).not_done:
                stop.close_all()  # boards that did not answer the abort in time (down, network gone)
            pool.shutdown(wait=True)
            for future in futures:  # boards that finished while the others were being stopped
                keep(future)
            raise
        finally:
            pool.shutdown(wait=True)
    return records


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a farm run as Ctrl-C does (bench_farm then keeps what finished and stops the rest)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
