"""Running an aarch64 program under qemu with the counter, and what one inference executed.

A program marks each inference (results/arm/counter.c); the counter reports the translation blocks run
inside the marks with their executions and instruction classes. Per inference = the windows' sum / the
number of windows: with the same input every window executes the same instructions, so the division is
exact (tests/test_arm_counter.py checks it).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from results.arm.plugin import build_plugin, qemu_binary
from results.arm.symbols import AddressMap, Mapping
from runtime.errors import EdgevitError

MARK_SYSCALL = 0x4556  # syscall(MARK_SYSCALL, 1) opens a window, (MARK_SYSCALL, 2) closes it (counter.c, EDGEVIT_MARK)
CLASSES = ("dot", "mul", "asimd", "fp", "load", "store", "scalar", "branch")  # counter.c's order
CLASS_TITLES = {"dot": "SDOT/UDOT", "mul": "SMULL/SMLAL/SADALP/MLA", "asimd": "other ASIMD", "fp": "FP",
                "load": "loads", "store": "stores", "scalar": "scalar integer", "branch": "branches"}


@dataclass(frozen=True)
class Block:
    """A translation block run inside the windows."""

    address: int
    executions: int  # in all windows together
    instructions: int  # per execution
    classes: tuple[int, ...]  # per execution, CLASSES order
    load_bytes: int  # per execution
    store_bytes: int


@dataclass(frozen=True)
class CounterReport:
    """What the counter wrote for one run."""

    total: int  # every instruction of the run, start-up included
    windows: int
    mappings: tuple[Mapping, ...]
    blocks: tuple[Block, ...]

    @staticmethod
    def parse(text: str) -> CounterReport:
        total = windows = 0
        mappings, blocks = [], []
        for line in text.splitlines():
            kind, *fields = line.split(" ", 3) if line.startswith("map ") else line.split()
            if kind == "total":
                total = int(fields[0])
            elif kind == "windows":
                windows = int(fields[0])
            elif kind == "map":
                mappings.append(Mapping(int(fields[0], 16), int(fields[1], 16), fields[2]))
            elif kind == "block":
                numbers = [int(fields[0], 16), *map(int, fields[1:])]
                blocks.append(Block(numbers[0], numbers[1], numbers[2], tuple(numbers[3:3 + len(CLASSES)]),
                                    numbers[-2], numbers[-1]))
        return CounterReport(total, windows, tuple(mappings), tuple(blocks))

    @property
    def window_instructions(self) -> int:
        return sum(b.executions * b.instructions for b in self.blocks)


@dataclass(frozen=True)
class Kernel:
    """Instructions per inference of one function."""

    library: str
    name: str
    instructions: float
    classes: dict[str, float]


@dataclass(frozen=True)
class InferenceCount:
    """Instructions one inference executed, by class and by function."""

    instructions: float
    classes: dict[str, float]
    load_bytes: float
    store_bytes: float
    kernels: tuple[Kernel, ...]  # most instructions first

    @staticmethod
    def from_report(report: CounterReport, addresses: AddressMap) -> InferenceCount:
        if report.windows == 0:
            raise EdgevitError("the counted program marked no inference window")
        per = 1 / report.windows
        classes = Counter()
        by_kernel: dict[tuple[str, str], Counter] = {}
        loads = stores = 0
        for block in report.blocks:
            library, name = addresses.locate(block.address)
            kernel = by_kernel.setdefault((library, name or library), Counter())
            for cls, n in zip(CLASSES, block.classes):
                classes[cls] += n * block.executions
                kernel[cls] += n * block.executions
            loads += block.load_bytes * block.executions
            stores += block.store_bytes * block.executions
        kernels = [Kernel(lib, name, sum(c.values()) * per, {k: v * per for k, v in c.items() if v})
                   for (lib, name), c in by_kernel.items()]
        kernels.sort(key=lambda k: -k.instructions)
        return InferenceCount(report.window_instructions * per, {c: classes[c] * per for c in CLASSES},
                              loads * per, stores * per, tuple(kernels))


def run_counted(program_argv: list[str], *, cpu: str, sysroot: Path, env: dict[str, str] | None = None,
                timeout_s: float = 3600) -> tuple[CounterReport, str]:
    """Run aarch64 `program_argv` (argv[0] a host path) as `cpu` with the counter; (report, the program's stdout).

    The program's loader and libraries come from `sysroot` (qemu -L), `env` is set inside the guest.
    """
    qemu, plugin = qemu_binary(), build_plugin()
    with tempfile.TemporaryDirectory(prefix="edgevit-count-") as tmp:
        report = Path(tmp) / "report.txt"
        settings = [arg for key, value in (env or {}).items() for arg in ("-E", f"{key}={value}")]
        argv = [qemu, "-cpu", cpu, "-L", str(sysroot), "-plugin", f"{plugin},out={report}", *settings, *program_argv]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgevitError(f"{Path(program_argv[0]).name} under {cpu} ran past {timeout_s:.0f} s") from None
        if result.returncode != 0 or not report.is_file():
            last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            raise EdgevitError(f"{Path(program_argv[0]).name} failed under qemu {cpu}: {last.removeprefix('error: ')}")
        return CounterReport.parse(report.read_text()), result.stdout
