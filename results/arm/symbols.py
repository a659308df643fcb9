"""Which function a guest address belongs to: the file the guest mapped there and that file's symbol table.

qemu's own symbol lookup knows only the main program's symbols; kernels live in model.so (and XNNPACK,
MLAS in the peers' libraries), which the dynamic loader maps at an address chosen at run time. The
counter records where each file was mapped (results/arm/counter.c), and a shared library's symbols are
offsets from its load address (its first PT_LOAD is at 0), so address - load address finds the symbol.
"""

from __future__ import annotations

import bisect
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from runtime.errors import EdgevitError

NM = "aarch64-linux-gnu-nm"
FUNCTION_TYPES = set("tTwWi")


@dataclass(frozen=True)
class Mapping:
    """A file the guest mapped at offset 0: [address, address + length)."""

    address: int
    length: int
    path: str  # as the guest named it


OUTLINED = " [outlined]"  # suffix of code between a function's end and the next symbol (see SymbolTable)


@dataclass(frozen=True)
class SymbolTable:
    """A library's functions, sorted by start offset; `names[k]` spans [starts[k], ends[k]).

    Code after a function's end and before the next symbol belongs to no symbol: where the file keeps its
    full symbol table (`local`), that is code the compiler outlined from the function before it without a
    name (TVM puts each parallel loop of a kernel into such a function right after the kernel's body), and
    it is named after that function with OUTLINED; in a stripped file nothing can be said of it.
    """

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    names: tuple[str, ...]
    local: bool  # the file has its static symbol table (not only the dynamic one)

    def lookup(self, offset: int) -> str | None:
        k = bisect.bisect_right(self.starts, offset) - 1
        if k < 0:
            return None
        if offset < self.ends[k]:
            return self.names[k]
        return self.names[k] + OUTLINED if self.local else None


@cache
def symbol_table(path: Path) -> SymbolTable:
    """Functions of an aarch64 ELF file from its static and dynamic symbol tables (stripped files: dynamic only)."""
    if shutil.which(NM) is None:
        raise EdgevitError(f"{NM} not found: apt-get install binutils-aarch64-linux-gnu")
    rows: dict[int, tuple[int, str]] = {}
    local = False
    for extra in ([], ["-D"]):
        result = subprocess.run([NM, "--defined-only", "-S", *extra, str(path)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            fields = line.split(maxsplit=3)
            if len(fields) == 4 and fields[2] in FUNCTION_TYPES and int(fields[1], 16) > 0:
                rows.setdefault(int(fields[0], 16), (int(fields[1], 16), fields[3]))
                local = local or not extra
    starts = sorted(rows)
    return SymbolTable(tuple(starts), tuple(s + rows[s][0] for s in starts), tuple(rows[s][1] for s in starts), local)


@dataclass(frozen=True)
class AddressMap:
    """Guest addresses -> (file name, function) for one counted run."""

    mappings: tuple[Mapping, ...]
    sysroot: Path  # qemu -L: a guest path resolves inside it when it exists there, else on the host

    def host_path(self, guest_path: str) -> Path:
        inside = self.sysroot / guest_path.lstrip("/")
        return inside if inside.exists() else Path(guest_path)

    def locate(self, address: int) -> tuple[str, str | None]:
        """(file name, function or None) of a guest address; ("program", None) outside every mapped file
        (the main program and the dynamic loader, which qemu maps itself)."""
        for mapping in reversed(self.mappings):  # the latest mapping of an address is the live one
            if mapping.address <= address < mapping.address + mapping.length:
                host = self.host_path(mapping.path)
                return host.name, symbol_table(host).lookup(address - mapping.address) if host.is_file() else None
        return "program", None
