"""Options every command shares are taken where users type them: before the command or after it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def runtime_parser():
    """runtime.__main__._parser (importing the module blocks nothing: only running it does, as on a board)."""
    from runtime.__main__ import _parser

    return _parser


@pytest.fixture(scope="module")
def remote_parser():
    from remote.__main__ import _parser

    return _parser


def parsed(parser, argv: str) -> dict:
    return vars(parser().parse_args(argv.split()))


@pytest.mark.parametrize("before, after", [
    ("--inventory F status", "status --inventory F"),
    ("--inventory F --trust-new deploy B --boards a", "deploy B --boards a --trust-new --inventory F"),
    ("--trust-new --inventory F bench B --repeat 3", "bench B --repeat 3 --inventory F --trust-new"),
    ("--inventory F tracker --port 9000", "tracker --port 9000 --inventory F"),
    ("--inventory F rpc-bench B --key k", "rpc-bench B --key k --inventory F"),
])
def test_remote_options_before_or_after_the_command(remote_parser, before, after):
    assert parsed(remote_parser, before) == parsed(remote_parser, after)


@pytest.mark.parametrize("before, after", [
    ("--threads 2 --json run B a.jpg", "run B a.jpg --threads 2 --json"),
    ("--json eval B --images I --labels L", "eval B --images I --labels L --json"),
    ("--json run B a.jpg b.jpg --save e.npy", "run B a.jpg b.jpg --save e.npy --json"),
    ("--threads 1 eval B --images I", "eval B --images I --threads 1"),
    ("--threads 3 bench B --repeat 4", "bench B --threads 3 --repeat 4"),
])
def test_runtime_options_before_or_after_the_command(runtime_parser, before, after):
    assert parsed(runtime_parser, before) == parsed(runtime_parser, after)


def test_an_option_left_out_after_the_command_keeps_the_value_before(remote_parser, runtime_parser):
    status = parsed(remote_parser, "--inventory F --trust-new status")
    assert str(status["inventory"]) == "F" and status["trust_new"] is True
    assert str(parsed(remote_parser, "status")["inventory"]) == "farm.toml"
    assert str(parsed(remote_parser, "--inventory F status --inventory G")["inventory"]) == "G"  # the later wins
    bench = parsed(runtime_parser, "--threads 2 --json bench B")
    assert bench["threads"] == 2 and bench["json"] is True
    assert parsed(runtime_parser, "bench B")["threads"] is None and not parsed(runtime_parser, "bench B")["json"]
