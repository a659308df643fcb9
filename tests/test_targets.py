"""Every target preset loads, builds a TVM target, and says what a board needs."""

import pytest

from runtime.errors import EdgevitError
from targets import list_presets, load_preset
from tests.helpers import REPO, assert_one_line_error, run_module

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


RPI5 = (REPO / "targets" / "presets" / "rpi5.toml").read_text()
DESCRIPTION = next(line + "\n" for line in RPI5.splitlines() if line.startswith("description = "))


@pytest.mark.parametrize("change, message", [
    (("required_cpu_features", "required_cpu_feature"),
     "unknown field 'required_cpu_feature' (did you mean 'required_cpu_features'?)"),
    (("cross_compiler", "colour = 'red'\ncross_compiler"), "unknown field 'colour'"),
    (("[runtime]\nrequirements", "[runtime]\nrequirement"),
     "unknown field 'runtime.requirement' (did you mean 'requirements'?)"),
    (('"asimddp"', '"asmiddp"'), "field 'required_cpu_features': 'asmiddp' is not a CPU feature of aarch64 "
                                 "(did you mean 'asimddp'?)"),
    (('"asimddp"', '"avx2"'), "field 'required_cpu_features': 'avx2' is not a CPU feature of aarch64"),
    ((DESCRIPTION, ""), "missing field 'description'"),
    (('arch = "aarch64"\n', ""), "missing field 'arch'"),
    (('arch = "aarch64"', 'arch = "arm64"'), "field 'arch' must be one of x86_64, aarch64, got 'arm64'"),
    (('required_cpu_features = ["asimd", "asimddp", "fphp", "asimdhp"]', 'required_cpu_features = "asimddp"'),
     "field 'required_cpu_features' must be a list of strings, got 'asimddp'"),
    (('num-cores = 4', 'num-cores = 4\n[tvm_target.x]'), None),  # TVM's own keys are TVM's to check
    (('kind = "llvm"\n', ""), "field 'tvm_target.kind' is missing (llvm, cuda)"),
    (('name = "rpi5"', 'name = "rpi6"'), "field 'name' must be 'rpi5', got 'rpi6'"),
])
def test_bad_preset_is_one_line_naming_preset_and_field(tmp_path, change, message):
    old, new = change
    assert old in RPI5
    path = tmp_path / "rpi5.toml"
    path.write_text(RPI5.replace(old, new, 1))
    if message is None:
        assert load_preset(str(path)).name == "rpi5"
        return
    with pytest.raises(EdgevitError) as err:
        load_preset(str(path))
    assert str(err.value) == f"target preset rpi5 ({path}): {message}"


@pytest.mark.parametrize("change, field", [
    (("required_cpu_features", "required_cpu_feature"), "'required_cpu_feature'"),
    (('"asimddp"', '"asmiddp"'), "'required_cpu_features'"),
    ((DESCRIPTION, ""), "missing field 'description'"),
])
def test_bad_preset_given_to_compile_exits_2(tmp_path, change, field):
    path = tmp_path / "rpi5.toml"
    path.write_text(RPI5.replace(*change, 1))
    result = run_module("compile", "--target", path, "--random-init")
    assert result.returncode == 2
    assert_one_line_error(result, f"target preset rpi5 ({path})", field)
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout


def test_misspelt_x86_feature_names_the_kernels_spelling(tmp_path):
    path = tmp_path / "x86-avx512.toml"
    path.write_text((REPO / "targets" / "presets" / "x86-avx512.toml").read_text().replace('"avx512_vnni"', '"avx512vnni"'))
    with pytest.raises(EdgevitError, match=r"'avx512vnni' is not a CPU feature of x86_64 \(did you mean 'avx512_vnni'\?\)"):
        load_preset(str(path))


def test_preset_from_a_file_of_its_own(tmp_path):
    path = tmp_path / "my-board.toml"
    path.write_text(RPI5.replace('name = "rpi5"', 'name = "my-board"'))
    assert load_preset(str(path)).required_cpu_features == load_preset("rpi5").required_cpu_features
    with pytest.raises(EdgevitError, match="target preset file not found"):
        load_preset(str(tmp_path / "none.toml"))
