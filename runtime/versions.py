"""The versions record: edgevit's own version and the installed versions of the distributions a record names,
read from their metadata (nothing is imported). Manifests (compile), bench lines (runtime, the native runner's
build) and result records (results) all take it from here."""

from __future__ import annotations

from importlib import metadata

import runtime


def versions(**distributions: str) -> dict[str, str]:
    """{"edgevit": ..., key: version of distribution, ...} for the keys whose distribution is installed."""
    found = {"edgevit": runtime.__version__}
    for key, distribution in distributions.items():
        try:
            found[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            pass
    return found
