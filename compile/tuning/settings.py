"""TuneSettings: what `--tune` asks for, checked before any heavy work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.errors import EdgevitError
from runtime.tracker import Tracker


@dataclass(frozen=True)
class TuneSettings:
    """N more MetaSchedule trials, where they are measured, and the database a build applies."""

    trials: int = 0  # 0: no tuning, the stored database is applied as it is
    rpc_key: str | None = None  # measure on the board registered at the tracker with this key
    tracker: Tracker = Tracker()
    database_dir: Path | None = None  # None: the preset's database in the repository (targets/tuning/<preset>)

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise EdgevitError(f"--tune takes a number of trials >= 0, got {self.trials}")
