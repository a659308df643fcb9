"""Options a command line takes before or after its subcommand (`python -m remote status --inventory F` is
`python -m remote --inventory F status`): the one helper every CLI of the project uses (it lives in runtime,
which imports nothing of the project, so compile, remote and results may all import it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def anywhere(define: Callable[[argparse.ArgumentParser], None],
             defaults: dict | None = None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(parent parser for the main parser, parent parser for each subparser), both with the options `define` adds
    (without default= of their own). After the subcommand every option defaults to SUPPRESS: given there it wins,
    left out it keeps the value given before. Before it, options default to `defaults`; None leaves them
    SUPPRESS too, for a CLI that fills in each command's own defaults after parsing."""
    before = argparse.ArgumentParser(add_help=False, argument_default=None if defaults is not None else argparse.SUPPRESS)
    define(before)
    if defaults is not None:
        before.set_defaults(**defaults)
    after = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    define(after)
    return before, after
