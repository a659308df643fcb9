"""Self-contained rpi4 / rpi5 bundles run by their own bin/edgevit-run on emulated boards that have no
Python, numpy or TVM: a sysroot of glibc and libstdc++ only, under qemu-aarch64-static."""

import json
import re

import pytest

from runtime.bundle import RUNNER
from tests.cuda_tools import needs_nvcc
from tests.helpers import cached_bundle, run_module

IMAGES = ["ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00000355.JPEG"]


def _top5(stdout: str) -> dict[str, tuple[int, list[int]]]:
    """Per image: top-1 and the sorted top-5 (float softmax / LayerNorm vectorize differently per ISA, so two
    near-tied classes inside the top-5 may swap places)."""
    results = json.loads(stdout.strip().splitlines()[-1])
    return {path.rsplit("/", 1)[-1]: (top[0]["class"], sorted(e["class"] for e in top)) for path, top in results.items()}


@pytest.fixture(scope="module")
def bare_boards(tmp_path_factory):
    from tests.emulated_board import bare_board

    root = tmp_path_factory.mktemp("bare-sysroot")
    boards = {cpu: bare_board(cpu, root) for cpu in ("cortex-a72", "cortex-a76")}
    present = {p.name for p in root.rglob("*")}
    assert not {"python3", "python3.11", "libtvm_runtime.so", "libpython3.11.so.1.0"} & present
    return boards


@pytest.mark.slow
@pytest.mark.parametrize("cpu, bundle_fixture", [("cortex-a72", "rpi4_int8_bundle"), ("cortex-a76", "rpi5_int8_bundle")])
def test_native_runner_on_bare_board_matches_host(cpu, bundle_fixture, bare_boards, int8_bundle, images_dir, request):
    bundle = request.getfixturevalue(bundle_fixture)
    images = [str(images_dir / name) for name in IMAGES]
    host = run_module("runtime", "run", int8_bundle, *images, "--json")
    assert host.returncode == 0, host.stderr[-2000:]
    board = bare_boards[cpu]
    result = board.run(board.host_program_argv(bundle / RUNNER, ["run", str(bundle), *images, "--json"]), timeout_s=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _top5(result.stdout) == _top5(host.stdout)


@pytest.mark.slow
def test_rpi5_bundle_refused_by_native_runner_on_cortex_a72(bare_boards, rpi5_int8_bundle, images_dir):
    board = bare_boards["cortex-a72"]
    argv = board.host_program_argv(rpi5_int8_bundle / RUNNER, ["run", str(rpi5_int8_bundle), str(images_dir / IMAGES[0])])
    result = board.run(argv, timeout_s=600)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "asimddp" in last and "rpi5" in last, last


@needs_nvcc
@pytest.mark.slow
def test_cuda_bundle_on_a_board_without_cuda_names_the_missing_library(bare_boards, images_dir):
    """A Jetson bundle carries lib/libtvm_runtime_cuda.so; on a board without the CUDA libraries it links, the
    runner says which one is missing (one line, exit 2), not a loader error."""
    bundle = cached_bundle("deit_tiny-jetson-fp32", "--target", "jetson")
    assert "lib/libtvm_runtime_cuda.so" in json.loads((bundle / "manifest.json").read_text())["files"]
    board = bare_boards["cortex-a76"]
    result = board.run(board.host_program_argv(bundle / RUNNER, ["run", str(bundle), str(images_dir / IMAGES[0])]),
                       timeout_s=600)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(r"needs libcu\w*\.so\.\d+", last) and "jetson" in last, last
