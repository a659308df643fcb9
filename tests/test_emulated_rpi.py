"""Cross-compiled rpi4 / rpi5 bundles on an emulated aarch64 board (qemu-user + a Debian arm64 sysroot)."""

import json
import subprocess

import pytest

from tests.helpers import REPO, run_module

IMAGES = ["ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00000355.JPEG"]


def _top5(stdout: str) -> dict[str, list[int]]:
    results = json.loads(stdout.strip().splitlines()[-1])
    return {path.rsplit("/", 1)[-1]: [entry["class"] for entry in top] for path, top in results.items()}


@pytest.mark.slow
def test_rpi5_bundle_on_cortex_a76_matches_host(rpi5_bundle, host_bundle, images_dir):
    from tests.emulated_board import emulated_board

    images = [images_dir / name for name in IMAGES]
    host = run_module("runtime", "run", host_bundle, *images, "--json")
    assert host.returncode == 0, host.stderr[-2000:]

    board = emulated_board("cortex-a76")
    result = board.run(board.python_argv(["-m", "runtime", "run", str(rpi5_bundle), *map(str, images), "--json"]),
                       cwd=REPO, env={"PYTHONPATH": str(REPO)}, timeout_s=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _top5(result.stdout) == _top5(host.stdout)


@pytest.mark.slow
def test_rpi5_bundle_refused_on_cortex_a72(rpi5_bundle, images_dir):
    from tests.emulated_board import emulated_board

    board = emulated_board("cortex-a72")
    result = board.run(board.python_argv(["-m", "runtime", "run", str(rpi5_bundle), str(images_dir / IMAGES[0])]),
                       cwd=REPO, env={"PYTHONPATH": str(REPO)}, timeout_s=600)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "asimddp" in last and "rpi5" in last, last


def _dot_product_instructions(library) -> dict[str, int]:
    disassembly = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(library)], capture_output=True, text=True,
                                 check=True).stdout
    mnemonics = [line.split("\t")[2].split()[0] for line in disassembly.splitlines() if line.count("\t") >= 2]
    return {op: mnemonics.count(op) for op in ("sdot", "udot", "usdot", "smull", "sadalp")}


def test_int8_objects_use_the_dot_products_their_cpu_has(rpi5_int8_bundle, rpi4_int8_bundle):
    rpi5 = _dot_product_instructions(rpi5_int8_bundle / "model.so")
    rpi4 = _dot_product_instructions(rpi4_int8_bundle / "model.so")
    print(f"rpi5: {rpi5}; rpi4: {rpi4}")
    assert rpi5["sdot"] > 0
    assert rpi4["sdot"] == rpi4["udot"] == rpi4["usdot"] == 0 and rpi4["smull"] > 0 and rpi4["sadalp"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("cpu, bundle_fixture", [("cortex-a72", "rpi4_int8_bundle"), ("cortex-a76", "rpi5_int8_bundle")])
def test_int8_bundle_on_emulated_board_matches_host(cpu, bundle_fixture, int8_bundle, images_dir, request):
    from tests.emulated_board import emulated_board

    bundle = request.getfixturevalue(bundle_fixture)
    images = [images_dir / name for name in IMAGES]
    host = run_module("runtime", "run", int8_bundle, *images, "--json")
    assert host.returncode == 0, host.stderr[-2000:]
    board = emulated_board(cpu)
    result = board.run(board.python_argv(["-m", "runtime", "run", str(bundle), *map(str, images), "--json"]),
                       cwd=REPO, env={"PYTHONPATH": str(REPO)}, timeout_s=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    # the integer GEMMs are exact, but float softmax / LayerNorm vectorize differently on each ISA, so two
    # near-tied classes inside the top-5 may swap places: same top-1 and the same five classes
    board_top5, host_top5 = _top5(result.stdout), _top5(host.stdout)
    assert {name: (top[0], sorted(top)) for name, top in board_top5.items()} == \
        {name: (top[0], sorted(top)) for name, top in host_top5.items()}
