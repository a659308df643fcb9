"""The loop every scheduling pass shares: rewrite each PrimFunc of a module that is not scheduled yet."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import tirx


def rewrite_unscheduled(mod: tvm.IRModule, rewrite: Callable[[tirx.PrimFunc], tirx.PrimFunc | None]) -> tvm.IRModule:
    """Replace each PrimFunc without `tirx.is_scheduled` by `rewrite(func)`; None leaves it as it is."""
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
            new = rewrite(func)
            if new is not None:
                updates[gv] = new
    for gv, func in updates.items():
        mod[gv] = func
    return mod
