"""CPU feature detection from the auxiliary vector and /proc/cpuinfo."""

import struct

from targets.cpu_features import AT_HWCAP, AT_HWCAP2, aarch64_features, cpu_features, read_auxv, x86_features


def test_auxv_parsing_and_aarch64_bits(tmp_path):
    # Cortex-A76 (as Linux reports it): fp asimd ... fphp asimdhp ... asimddp
    hwcap = (1 << 0) | (1 << 1) | (1 << 9) | (1 << 10) | (1 << 20)
    auxv = tmp_path / "auxv"
    auxv.write_bytes(struct.pack("<6Q", AT_HWCAP, hwcap, AT_HWCAP2, 1 << 13, 0, 0))
    features = aarch64_features(read_auxv(auxv))
    assert {"fp", "asimd", "fphp", "asimdhp", "asimddp", "i8mm"} == features
    assert "asimddp" not in aarch64_features({AT_HWCAP: 0b11})


def test_x86_flags():
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert x86_features(text) == {"fpu", "avx2", "avx512f", "avx512_vnni"}


def test_this_machine_reports_features():
    assert cpu_features(), "no CPU features detected on this machine"
