"""The emulated aarch64 board (tests/emulated_board.py): its python runs the aarch64 wheels, reports
the emulated CPU's features through AT_HWCAP, sees the host's paths, and runs code cross-compiled here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.emulated_board import EmulatedBoard, emulated_board

REPO = Path(__file__).resolve().parent.parent

# AT_HWCAP = 16; bits from arch/arm64/include/uapi/asm/hwcap.h
HWCAP_OF = """
import struct
auxv = dict(struct.iter_unpack("<QQ", open("/proc/self/auxv", "rb").read()))
print(auxv[16])
"""
DOTPROD_AND_FP16 = {"asimddp": 1 << 20, "fphp": 1 << 9, "asimdhp": 1 << 10}

ADD_ON_BOARD = """
import sys, numpy as np, tvm
a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
c = tvm.runtime.empty(a.shape, "float32", tvm.cpu())
tvm.runtime.load_module(sys.argv[1])["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), c)
np.save(sys.argv[4], c.numpy())
"""


def _check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def rpi5() -> EmulatedBoard:
    return emulated_board("cortex-a76")


@pytest.mark.slow
def test_board_python_runs_the_aarch64_wheels(rpi5):
    probe = ("import json, platform, numpy, PIL, tvm, tvm_ffi, psutil, tornado, cloudpickle; print(json.dumps("
             "[platform.machine(), numpy.__version__, PIL.__version__, tvm.__version__, tvm.__file__]))")
    output = _check(rpi5.run(rpi5.python_argv(["-c", probe])))
    machine, numpy_version, pillow_version, tvm_version, tvm_file = json.loads(output)
    assert machine == "aarch64"
    assert (numpy_version, pillow_version, tvm_version) == ("2.4.6", "13.0.0", "0.27.0.post1")
    assert Path(tvm_file).is_relative_to(rpi5.sysroot), tvm_file  # the board's wheel, not the host's


@pytest.mark.slow
@pytest.mark.parametrize("cpu, has_dotprod_and_fp16", [("cortex-a76", True), ("cortex-a72", False)])
def test_hwcap_is_the_emulated_cpus(rpi5, cpu, has_dotprod_and_fp16):
    board = EmulatedBoard(rpi5.sysroot, cpu)
    hwcap = int(_check(board.run(board.python_argv(["-c", HWCAP_OF]))))
    reported = {name: bool(hwcap & bit) for name, bit in DOTPROD_AND_FP16.items()}
    assert reported == dict.fromkeys(DOTPROD_AND_FP16, has_dotprod_and_fp16)
    # A python the board's python starts (TVM's RPC server starts sys.executable) is the same CPU,
    # and so is the host script python_executable() on its own (a farm's sshd runs it).
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HWCAP_OF!r}], check=True)"
    assert int(_check(board.run(board.python_argv(["-c", child])))) == hwcap
    assert int(_check(board.run([str(board.python_executable()), "-c", HWCAP_OF]))) == hwcap


@pytest.mark.slow
def test_board_sees_host_paths(rpi5, tmp_path):
    probe = ("import json, os, sys, runtime; open(sys.argv[1], 'w').write('from the board'); "
             "print(json.dumps([runtime.__file__, os.listdir(os.path.dirname(os.path.dirname(sys.argv[1])))]))")
    written = tmp_path / "written.txt"
    runtime_file, listing = json.loads(_check(rpi5.run(rpi5.python_argv(["-c", probe, str(written)]), cwd=REPO)))
    assert Path(runtime_file).is_relative_to(REPO)
    assert written.read_text() == "from the board"
    assert tmp_path.name in listing  # host directories are not shadowed by empty ones in the sysroot


@pytest.mark.slow
def test_cross_compiled_tvm_function_runs_on_board(rpi5, tmp_path):
    import tvm
    from tvm import te
    from tvm.support import cc

    n = 1000
    a, b = te.placeholder((n,), "float32", name="A"), te.placeholder((n,), "float32", name="B")
    c = te.compute((n,), lambda i: a[i] + b[i], name="C")
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"})
    library = tmp_path / "add.so"
    tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b, c])}), target=target).export_library(
        str(library), fcompile=cc.cross_compiler("aarch64-linux-gnu-g++"))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]
    for name, array in zip(("a.npy", "b.npy"), inputs):
        np.save(tmp_path / name, array)
    argv = ["-c", ADD_ON_BOARD, *(str(tmp_path / name) for name in ("add.so", "a.npy", "b.npy", "c.npy"))]
    _check(rpi5.run(rpi5.python_argv(argv)))
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), inputs[0] + inputs[1])
