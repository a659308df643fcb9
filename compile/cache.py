"""Where edgevit keeps what is expensive to make and safe to reuse (fetched wheels, built runners, test fixtures)."""

import os
from pathlib import Path


def edgevit_cache_dir() -> Path:
    """$EDGEVIT_CACHE, else ~/.cache/edgevit; created on first use."""
    path = Path(os.environ.get("EDGEVIT_CACHE", Path.home() / ".cache" / "edgevit"))
    path.mkdir(parents=True, exist_ok=True)
    return path
