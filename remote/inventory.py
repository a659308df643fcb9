"""The farm inventory: farm.toml -> frozen Board records, validated in one place.

    [defaults]                      # optional, applies to every board
    user = "pi"
    key_file = "~/.ssh/edgevit_farm"
    known_hosts = "~/.ssh/known_hosts"
    remote_dir = "/home/pi/edgevit"

    [[board]]
    name = "pi5-a"
    host = "192.0.2.15"
    port = 22
    preset = "rpi5"                 # a targets/ preset: what bundles this board runs
    rpc_key = "rpi5"                # TVM RPC tracker key (optional)
    python = "python3"              # interpreter on the board (optional)
    power = { sampler = "vcgencmd" }
    require_signed = true           # deploy only bundles signed by a key in trusted_keys (optional)
    trusted_keys = "~/.config/edgevit/trusted_keys"

A bad entry raises EdgevitError naming the board and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from remote.power import SAMPLER_NAMES
from runtime.errors import EdgevitError

REQUIRED = ("name", "host", "preset")


@dataclass(frozen=True)
class Board:
    """One board of the farm and how to reach it."""

    name: str
    host: str
    preset: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    remote_dir: str = "edgevit"
    python: str = "python3"
    rpc_key: str | None = None
    power: dict[str, Any] = field(default_factory=lambda: {"sampler": "none"})
    require_signed: bool = False  # remote deploy uploads only bundles signed by a key in trusted_keys
    trusted_keys: Path | None = None  # a trust store: .pub lines (runtime.signing)


def _board(entry: dict[str, Any], defaults: dict[str, Any], index: int) -> Board:
    merged = {**defaults, **entry}
    name = merged.get("name", f"#{index}")
    for key in REQUIRED:
        if not merged.get(key):
            raise EdgevitError(f"farm inventory: board {name}: missing field '{key}'")
    unknown = set(merged) - set(Board.__dataclass_fields__)
    if unknown:
        raise EdgevitError(f"farm inventory: board {name}: unknown field(s) {', '.join(sorted(unknown))}")
    port = merged.get("port", 22)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise EdgevitError(f"farm inventory: board {name}: field 'port' must be 1-65535, got {port!r}")
    from targets import preset_file

    try:
        preset_file(merged["preset"])
    except EdgevitError as err:
        raise EdgevitError(f"farm inventory: board {name}: field 'preset': {err}") from None
    power = merged.get("power", {"sampler": "none"})
    if not isinstance(power, dict) or power.get("sampler", "none") not in SAMPLER_NAMES:
        raise EdgevitError(f"farm inventory: board {name}: field 'power': sampler must be one of {SAMPLER_NAMES}")
    if not isinstance(merged.get("require_signed", False), bool):
        raise EdgevitError(f"farm inventory: board {name}: field 'require_signed' must be true or false")
    if merged.get("require_signed") and not merged.get("trusted_keys"):
        raise EdgevitError(f"farm inventory: board {name}: field 'trusted_keys' is needed with require_signed = true")
    for key in ("key_file", "known_hosts", "trusted_keys"):
        if merged.get(key) is not None:
            merged[key] = Path(merged[key]).expanduser()
    return Board(**merged)


def load_inventory(path: Path) -> list[Board]:
    """All boards of a farm.toml; names must be unique."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgevitError(f"farm inventory not found: {path} (see farm.example.toml)") from None
    except tomllib.TOMLDecodeError as err:
        raise EdgevitError(f"farm inventory {path}: not valid TOML ({err})") from None
    defaults = data.get("defaults", {})
    boards = [_board(entry, defaults, i) for i, entry in enumerate(data.get("board", []))]
    if not boards:
        raise EdgevitError(f"farm inventory {path}: no [[board]] entries")
    names = [b.name for b in boards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EdgevitError(f"farm inventory {path}: duplicate board name(s) {', '.join(duplicates)}")
    return boards


def select(boards: list[Board], names: list[str]) -> list[Board]:
    """The named boards (all when `names` is empty); an unknown name is an error."""
    if not names:
        return boards
    by_name = {b.name: b for b in boards}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise EdgevitError(f"unknown board(s) {', '.join(missing)}; inventory has {', '.join(by_name)}")
    return [by_name[n] for n in names]
