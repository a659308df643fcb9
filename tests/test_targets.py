"""Every target preset loads, builds a TVM target, and says what a board needs."""

import pytest

from runtime.errors import EdgevitError
from targets import list_presets, load_preset
from tests.helpers import run_module

CUDA_SM = ("80", "86", "89", "90")
EXPECTED = {"host", "x86-avx512", "rpi4", "rpi5", "aarch64", "jetson-orin-nano", "jetson-agx-orin", "jetson-xavier",
            *(f"cuda-sm{sm}" for sm in CUDA_SM)}


def test_every_preset_builds_a_tvm_target():
    presets = {p.name: p for p in list_presets()}
    assert set(presets) == EXPECTED
    for preset in presets.values():
        target = preset.target()
        assert target.kind.name == ("cuda" if preset.device == "cuda" else "llvm")
        assert preset.runtime_requirements, preset.name
        assert preset.arch in ("x86_64", "aarch64")


def test_board_specs():
    assert load_preset("jetson") is load_preset("jetson-orin-nano")
    orin = load_preset("jetson-orin-nano")
    assert orin.tvm_target["arch"] == "sm_87"
    assert orin.tvm_target["host"]["mcpu"] == "cortex-a78ae"  # not TVM's tag default, Xavier's carmel
    assert "asimddp" in load_preset("rpi5").required_cpu_features
    assert "asimddp" not in load_preset("rpi4").required_cpu_features
    assert load_preset("rpi5").target().attrs["feature.has_dotprod"]
    assert not load_preset("rpi4").target().attrs["feature.has_dotprod"]


@pytest.mark.parametrize("sm", CUDA_SM)
def test_desktop_gpu_presets(sm):
    preset = load_preset(f"cuda-sm{sm}")
    assert preset.device == "cuda" and preset.arch == "x86_64" and preset.cross_compiler is None
    target = preset.target()
    assert target.attrs["arch"] == f"sm_{sm}"
    assert target.host.kind.name == "llvm" and target.host.attrs["mtriple"].startswith("x86_64")


def test_host_is_detected_from_this_machine():
    from tvm.target import codegen

    from targets.cpu_features import cpu_features, machine_arch

    host = load_preset("host")
    assert host.arch == machine_arch()
    assert host.tvm_target["mcpu"] == codegen.llvm_get_system_cpu()
    assert set(host.required_cpu_features) <= cpu_features()


def test_unknown_target_is_one_clear_error():
    with pytest.raises(EdgevitError, match="unknown target 'pi9'.*rpi5"):
        load_preset("pi9")


def test_list_targets_cli():
    result = run_module("compile", "--list-targets")
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines()}
    assert names == EXPECTED
    assert "alias: jetson" in result.stdout
