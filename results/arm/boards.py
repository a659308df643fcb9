"""The boards `results arm` counts for, as data: qemu's CPU model, clock, /proc/cpuinfo, per-class throughputs.

A board is a target preset (targets/presets) that also has a counting record here: its CPU is emulated
by the qemu model of the preset's `mcpu`, and its core model turns instruction counts into cycles
(results/arm/estimate.py). Throughputs are instructions per cycle for each counted class, from Arm's
Software Optimization Guides (SOG):
- Cortex-A76 SOG, PJDOC-466751330-7215: decode 4 instructions a cycle; pipelines B (1), S (2) + M (1)
  integer, V0 / V1 (2) FP and ASIMD, L (2) load/store address; SDOT / UDOT, ASIMD integer basic and FP
  FMLA on V0 and V1 (2 a cycle); ASIMD integer multiply and multiply-accumulate (MUL, MLA, SMULL,
  SMLAL, SQRDMULH) on V0 only and SADALP on V1 only (1 a cycle); stores 1 a cycle.
- Cortex-A72 SOG, ARM UAN 0016A: decode 3 instructions a cycle; pipelines B (1), I0 / I1 (2) + M
  integer, F0 / F1 (2) FP and ASIMD, L (1 load) and S (1 store); ASIMD integer multiply-accumulate long
  on F0 (1 a cycle), SADALP on F1 (1 a cycle); 128-bit (Q-form) FP multiply-accumulate 1 a cycle;
  no dot product instructions.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import EdgevitError

VECTOR = ("dot", "mul", "asimd", "fp")  # classes that issue to the FP / ASIMD pipelines


@dataclass(frozen=True)
class CoreModel:
    """How many instructions of each class a core can start per cycle, alone and sharing pipelines."""

    name: str  # qemu's and LLVM's CPU name
    decode_per_cycle: float
    per_cycle: dict[str, float]  # counter class -> instructions a cycle on its own pipelines
    vector_per_cycle: float  # the FP / ASIMD pipelines together (VECTOR classes)
    memory_per_cycle: float  # loads and stores together (address generation)
    source: str

    def __post_init__(self):
        if self.decode_per_cycle <= 0 or self.vector_per_cycle <= 0 or self.memory_per_cycle <= 0:
            raise ValueError(f"{self.name}: throughputs must be positive")
        if any(rate < 0 for rate in self.per_cycle.values()):
            raise ValueError(f"{self.name}: negative throughput")


@dataclass(frozen=True)
class PublishedLatency:
    """A figure measured on the real board by someone else, to hold the estimate against."""

    contender: str  # which of our contenders it corresponds to
    latency_ms: float
    source: str
    differs: str  # what is not the same as what we count


@dataclass(frozen=True)
class ArmBoard:
    """A board preset with what counting and estimating on it need."""

    preset: str
    core: CoreModel
    clock_ghz: float
    cores: int
    cpuinfo: str  # the board's /proc/cpuinfo, for the guest
    published: tuple[PublishedLatency, ...] = ()

    @property
    def qemu_cpu(self) -> str:
        return self.core.name


CORTEX_A76 = CoreModel(
    "cortex-a76", decode_per_cycle=4,
    per_cycle={"dot": 2, "mul": 1, "asimd": 2, "fp": 2, "load": 2, "store": 1, "scalar": 3, "branch": 1},
    vector_per_cycle=2, memory_per_cycle=2, source="Arm Cortex-A76 Software Optimization Guide (PJDOC-466751330-7215)")
CORTEX_A72 = CoreModel(
    "cortex-a72", decode_per_cycle=3,
    per_cycle={"dot": 0, "mul": 1, "asimd": 2, "fp": 1, "load": 1, "store": 1, "scalar": 2, "branch": 1},
    vector_per_cycle=2, memory_per_cycle=2, source="Arm Cortex-A72 Software Optimization Guide (UAN 0016A)")

_NETSPRESSO = ("NetsPresso device matrix (netspresso-trainer docs/benchmarks/device_matrix/tflite.md): a ViT-tiny, "
               "224 px, TFLite INT8")
_DIFFERS = ("a 3-class head instead of 1,000 (the head is 0.03% of the MACs), its own INT8 converter, "
            "thread count not stated")


def _cpuinfo(features: str, variant: str, part: str, revision: int, model: str, hardware: str) -> str:
    """A Raspberry Pi OS /proc/cpuinfo: four identical cores, then the board lines."""
    core = (f"BogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
            f"CPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
    board = f"Hardware\t: {hardware}\n" if hardware else ""
    return "".join(f"processor\t: {n}\n{core}" for n in range(4)) + board + f"Model\t\t: {model}\n"


BOARDS = {
    "rpi5": ArmBoard(
        "rpi5", CORTEX_A76, clock_ghz=2.4, cores=4,
        cpuinfo=_cpuinfo("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                         "dcpop asimddp", "0x4", "0xd0b", 1, "Raspberry Pi 5 Model B Rev 1.0", ""),
        published=(PublishedLatency("litert-int8", 49.8, _NETSPRESSO + ", Raspberry Pi 5", _DIFFERS),)),
    "rpi4": ArmBoard(
        "rpi4", CORTEX_A72, clock_ghz=1.8, cores=4,
        cpuinfo=_cpuinfo("fp asimd evtstrm crc32 cpuid", "0x0", "0xd08", 3, "Raspberry Pi 4 Model B Rev 1.4",
                         "BCM2835"),
        published=(PublishedLatency("litert-int8", 197.1, _NETSPRESSO + ", Raspberry Pi 4B", _DIFFERS),)),
}


def arm_board(name: str) -> ArmBoard:
    """The counting record of a board preset; an error names the preset or the boards that have one."""
    from targets import load_preset

    preset = load_preset(name)  # an unknown name: one line listing the presets
    if name not in BOARDS:
        raise EdgevitError(f"no ARM counting model for preset '{preset.name}'; boards: {', '.join(BOARDS)}")
    board = BOARDS[name]
    if preset.cpu_target.get("mcpu") != board.qemu_cpu:
        raise EdgevitError(f"preset {name} compiles for {preset.cpu_target.get('mcpu')}, its counting model is "
                           f"{board.qemu_cpu}")
    return board
