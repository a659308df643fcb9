"""farm.toml loading: the example loads; a bad entry names the board and the field; `python -m remote` reads it."""

import json

import pytest

from remote.inventory import load_inventory, select
from runtime.errors import EdgevitError
from tests.helpers import REPO, run_module


def test_example_inventory_loads():
    boards = load_inventory(REPO / "farm.example.toml")
    assert [b.name for b in boards] == ["pi5-a", "pi4-a", "pi4-lab", "orin-nano-a"]
    assert boards[0].user == "pi" and boards[3].user == "nvidia"
    assert boards[0].key_file.is_absolute() and boards[1].power["sampler"] == "external"
    assert boards[2].require_signed and boards[2].trusted_keys.is_absolute() and not boards[0].require_signed
    assert select(boards, ["pi4-a"]) == [boards[1]]


@pytest.mark.parametrize("entry, message", [
    ('name = "b1"\nhost = "h"', "board b1: missing field 'preset'"),
    ('name = "b1"\nhost = "h"\npreset = "pi9"', "board b1: field 'preset'"),
    ('name = "b1"\nhost = "h"\npreset = "rpi5"\nport = 70000', "board b1: field 'port'"),
    ('name = "b1"\nhost = "h"\npreset = "rpi5"\ncolour = "red"', "board b1: unknown field(s) colour"),
    ('name = "b1"\nhost = "h"\npreset = "rpi5"\npower = { sampler = "magic" }', "board b1: field 'power'"),
    ('name = "b1"\nhost = "h"\npreset = "rpi5"\nrequire_signed = "yes"', "board b1: field 'require_signed'"),
    ('name = "b1"\nhost = "h"\npreset = "rpi5"\nrequire_signed = true', "board b1: field 'trusted_keys' is needed"),
])
def test_bad_entries_name_board_and_field(tmp_path, entry, message):
    path = tmp_path / "farm.toml"
    path.write_text(f"[[board]]\n{entry}\n")
    with pytest.raises(EdgevitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_inventory(path)


def test_unknown_board_name(tmp_path):
    boards = load_inventory(REPO / "farm.example.toml")
    with pytest.raises(EdgevitError, match="unknown board"):
        select(boards, ["nope"])


@pytest.mark.parametrize("inventory_first", [True, False])
def test_status_cli_takes_the_inventory_before_or_after_the_command(tmp_path, inventory_first):
    inventory = tmp_path / "farm.toml"
    inventory.write_text('[[board]]\nname = "gone"\nhost = "127.0.0.1"\nport = 1\npreset = "rpi5"\n')
    args = ["--inventory", inventory, "status"] if inventory_first else ["status", "--inventory", inventory]
    result = run_module("remote", *args, timeout_s=120)
    assert result.returncode == 1, result.stderr[-2000:]  # the one board is down, and the inventory was read
    rows = json.loads(result.stdout.splitlines()[-1])
    assert [(r["board"], r["reachable"]) for r in rows] == [("gone", False)]
