"""Result records: JSON lines written atomically, read back for reports."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
