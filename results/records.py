"""Result records: JSON lines written atomically or appended one by one, read back for reports."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.atomic_write import write_atomic
from runtime.errors import EdgevitError


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace `path` with one JSON object per line."""
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Save a matplotlib figure through a temp file and a rename, then free it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)
    plt.close(fig)


def write_results_folder(out_dir: Path, stem: str, records: list[dict[str, Any]], table: str, caption: str,
                 plot: Callable[[list[dict[str, Any]], Path], None]) -> None:
    """The three files of a results folder: `stem`.jsonl, `stem`.png and `stem`.md (table, then the plot)."""
    write_jsonl(out_dir / f"{stem}.jsonl", records)
    plot(records, out_dir / f"{stem}.png")
    write_atomic(out_dir / f"{stem}.md", f"{table}\n![{caption}]({stem}.png)\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class RecordLog:
    """A JSONL file that grows one record at a time, with one writer (use as a context manager).

    append() writes the record as one complete line in one write() and fsyncs it before returning, so a
    crash or a kill loses at most the record being written; a torn last line (a kill inside that write)
    is cut off when the file is opened next. A second writer is refused while the first holds the file.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = -1
        self._records: list[dict[str, Any]] = []

    def __enter__(self) -> "RecordLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel however the writer ends
        except BlockingIOError:
            os.close(self._fd)
            raise EdgevitError(f"{self.path} is being written by another process") from None
        try:
            self._records = self._read_complete_lines()
        except BaseException:
            os.close(self._fd)
            raise
        if created:  # the file's name survives a crash of the host too
            _fsync_dir(self.path.parent)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)

    def _read_complete_lines(self) -> list[dict[str, Any]]:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            os.ftruncate(self._fd, complete)
            os.fsync(self._fd)
        records = []
        for number, line in enumerate(data[:complete].splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                raise EdgevitError(f"{self.path}:{number}: not a JSON record") from None
        return records

    def records(self) -> list[dict[str, Any]]:
        """Every record in the file (those there when it was opened, then those appended)."""
        return list(self._records)

    def append(self, record: dict[str, Any]) -> None:
        """Append `record` as one line and make it durable."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        start = os.fstat(self._fd).st_size
        written = 0
        try:
            while written < len(line):
                written += os.write(self._fd, line[written:])
            os.fsync(self._fd)
        except OSError as err:
            os.ftruncate(self._fd, start)  # no torn line for the next record to follow (a full disk)
            raise EdgevitError(f"cannot append to {self.path}: {err.strerror}") from None
        self._records.append(record)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
