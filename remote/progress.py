"""`remote bench` as it goes: a live line per board in flight (its phase, for how long), a summary line, and a
result line printed above them for each board as its record reaches the file (remote.bench.FarmProgress)."""

from __future__ import annotations

import threading
import time

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from remote.inventory import Board


def record_line(record: dict) -> str:
    """One board's result, as the farm prints it."""
    if record["status"] == "ok":
        return (f"{escape(record['board'])}: median {record['median_ms']:.1f} ms, p90 {record['p90_ms']:.1f} ms, "
                f"peak RSS {record['peak_rss_mb']:.0f} MB")
    return f"{escape(record['board'])}: [red]error[/red] {escape(record['error'])}"


class LiveProgress:
    """A FarmProgress on a rich console (use as a context manager; the live lines go when it closes)."""

    def __init__(self, console: Console):
        self.console = console
        self._lock = threading.Lock()
        self._phases: dict[str, tuple[str, float]] = {}  # board in flight -> (phase, when it started)
        self.total = self.done = self.errors = 0
        self._live = Live(self, console=console, transient=True, refresh_per_second=4)

    def __enter__(self) -> "LiveProgress":
        self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        self._live.stop()

    def queued(self, boards: list[Board]) -> None:
        self.total = len(boards)

    def phase(self, board: str, text: str) -> None:
        with self._lock:
            started = self._phases.get(board, ("", time.monotonic()))[1]
            self._phases[board] = (text, started)

    def finished(self, record: dict) -> None:
        with self._lock:
            self._phases.pop(record["board"], None)
            self.done += 1
            self.errors += record["status"] != "ok"
        self._live.console.print(record_line(record))

    def __rich__(self) -> Group:
        now = time.monotonic()
        table = Table.grid(padding=(0, 2))
        with self._lock:
            for board, (text, started) in sorted(self._phases.items()):
                table.add_row(board, f"{now - started:4.0f} s", text)
            running = len(self._phases)
            summary = (f"{self.done}/{self.total} boards done ({self.errors} failed), {running} running, "
                       f"{self.total - self.done - running} waiting")
        return Group(table, Text(summary, style="bold"))
