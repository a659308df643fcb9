"""Cross-compiled rpi4 / rpi5 bundles on an emulated aarch64 board (qemu-user + a Debian arm64 sysroot with python3
and numpy only), through the Python binding on each bundle's own core."""

import json
import subprocess

import pytest

from runtime.bundle import RUNNER
from tests.helpers import REPO

IMAGES = ["ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00000355.JPEG"]


def _top5(stdout: str) -> dict[str, list[int]]:
    results = json.loads(stdout.strip().splitlines()[-1])
    return {path.rsplit("/", 1)[-1]: [entry["class"] for entry in top] for path, top in results.items()}


@pytest.fixture(scope="module")
def numpy_board():
    """An emulated rpi5 whose sysroot has Debian's python3 and python3-numpy and nothing else: no TVM, no pip."""
    from tests.emulated_board import NUMPY_ONLY, SITE, emulated_board

    board = emulated_board("cortex-a76", NUMPY_ONLY)
    present = {p.name for p in (board.sysroot / SITE).iterdir()}
    assert "numpy" in present and not {"tvm", "tvm_ffi", "pip", "PIL"} & present
    assert not list((board.sysroot / "usr/lib/python3.11").glob("**/ensurepip/_bundled/*.whl"))
    return board


def _on_board(board, *args: str):
    """python3 -m runtime ARGS on the board, the runtime package from this repository (the host path shows through)."""
    return board.run(board.python_argv(["-m", "runtime", *args]), cwd=REPO, env={"PYTHONPATH": str(REPO)},
                     timeout_s=1500)


@pytest.mark.slow
def test_binding_on_numpy_only_rpi5_matches_its_native_runner(numpy_board, rpi5_int8_bundle, images_dir, labels_csv):
    """python3 -m runtime run / eval / bench through the binding (the bundle's aarch64 core, loaded by Debian's
    python3 with ctypes) on the board: the same top-5 and accuracy as the bundle's bin/edgevit-run there."""
    bundle = rpi5_int8_bundle
    images = [str(images_dir / name) for name in IMAGES]
    python = _on_board(numpy_board, "run", str(bundle), *images, "--json")
    assert python.returncode == 0, python.stderr[-3000:]
    native = numpy_board.run(numpy_board.host_program_argv(bundle / RUNNER, ["run", str(bundle), *images, "--json"]),
                             timeout_s=1500)
    assert native.returncode == 0, native.stderr[-3000:]
    assert _top5(python.stdout) == _top5(native.stdout)
    evaluation = ["eval", str(bundle), "--images", str(images_dir), "--labels", str(labels_csv), "--skip", "256",
                  "--limit", "8", "--json"]
    python = _on_board(numpy_board, *evaluation)
    native = numpy_board.run(numpy_board.host_program_argv(bundle / RUNNER, evaluation), timeout_s=1500)
    assert python.returncode == 0 and native.returncode == 0, python.stderr[-2000:] + native.stderr[-2000:]
    assert json.loads(python.stdout.splitlines()[-1]) == json.loads(native.stdout.splitlines()[-1])
    bench = _on_board(numpy_board, "bench", str(bundle), "--warmup", "1", "--repeat", "2", "--json")
    assert bench.returncode == 0, bench.stderr[-3000:]
    record = json.loads(bench.stdout.splitlines()[-1])
    assert record["runtime"] == "python" and record["machine"] == "aarch64" and record["n"] == 2


@pytest.mark.slow
def test_rpi5_bundle_refused_on_cortex_a72(numpy_board, rpi5_int8_bundle, images_dir):
    from tests.emulated_board import EmulatedBoard

    board = EmulatedBoard(numpy_board.sysroot, "cortex-a72")
    result = _on_board(board, "run", str(rpi5_int8_bundle), str(images_dir / IMAGES[0]))
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
