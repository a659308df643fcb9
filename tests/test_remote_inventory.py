"""farm.toml loading: the example loads; a bad entry names the board and the field."""

import pytest

from remote.inventory import load_inventory, select
from runtime.errors import EdgevitError
from tests.conftest import REPO


def test_example_inventory_loads():
    boards = load_inventory(REPO / "farm.example.toml")
    assert [b.name for b in boards] == ["pi5-a", "pi4-a", "orin-nano-a"]
    assert boards[0].user == "pi" and boards[2].user == "nvidia"
    assert boards[0].key_file.is_absolute() and boards[1].power["sampler"] == "external"
    assert select(boards, ["pi4-a"]) == [boards[1]]


@pytest.mark.parametrize("entry, message", [
    ('name = "b1"\nhost = "h"', "board b1: missing field 'preset'"),
    ('name = "b1"\nhost = "h"\npreset = "pi9"', "board b1: field 'preset'"),
    ('name = "b1"\nhost = "h"\npreset = "rpi5"\nport = 70000', "board b1: field 'port'"),
    ('name = "b1"\nhost = "h"\npreset = "rpi5"\ncolour = "red"', "board b1: unknown field(s) colour"),
    ('name = "b1"\nhost = "h"\npreset = "rpi5"\npower = { sampler = "magic" }', "board b1: field 'power'"),
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
