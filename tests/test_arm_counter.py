"""The ARM instruction counter (results/arm): exact counts of what an inference executes on an emulated
Cortex-A76, checked against what the code must execute. No timing anywhere."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tvm import relax

from compile.kernels import emit_int8_dense
from compile.kernels.dot_kernel import dot_kernel_for
from compile.kernels.packed_gemm import GemmPlan
from results.arm.count import run_counted
from targets import load_preset

pytestmark = pytest.mark.skipif(shutil.which("qemu-aarch64") is None,
                                reason="qemu-aarch64 (Debian qemu-user) not installed: bash .ci/install")

GEMM_M, GEMM_K, GEMM_N = 24, 64, 48
WARMUP = "2"  # inferences before the counted ones (results arm's default)


def test_counter_counts_the_sdots_of_an_int8_gemm_and_names_it():
    """One int8 GEMM built for rpi5, called once inside a window by the board's python: its SDOTs are the
    packed GEMM's (padded M x N x K, 16 multiply-adds each), all in the GEMM's own function, and the product
    equals numpy's."""
    from compile.cache import edgevit_cache_dir
    from results.arm.boards import arm_board
    from results.arm.functions import LIBRARY, count_functions
    from results.arm.sysroot import board_root

    board = arm_board("rpi5")
    target = load_preset(board.preset).target()
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (GEMM_M, GEMM_K)).astype(np.int8)
    weight = rng.integers(-128, 128, (GEMM_K, GEMM_N)).astype(np.int8)
    bb = relax.BlockBuilder()
    var = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with bb.function("gemm", [var]):
        with bb.dataflow():
            out = bb.emit_output(emit_int8_dense(bb, var, weight, target))
        bb.emit_func_output(out)
    root = board_root(edgevit_cache_dir(), board.preset, board.cpuinfo)
    counts, outputs, whole = count_functions(bb.get(), {"gemm": [x]}, board.preset, root, board.qemu_cpu)
    np.testing.assert_array_equal(outputs["gemm"], x.astype(np.int64) @ weight.astype(np.int64))

    plan = GemmPlan.make(dot_kernel_for(target), GEMM_M, GEMM_N, GEMM_K, "int8")
    sdots = plan.m_pad * plan.n_pad * plan.k_pad // (plan.kernel.lanes * plan.kernel.depth)
    assert whole.classes["dot"] == sdots  # every SDOT of the window
    assert counts["gemm"].classes["dot"] == sdots  # ... in the kernels the function calls
    with_dots = [k for k in whole.kernels if k.classes.get("dot")]
    assert with_dots and all(k.library == LIBRARY and "int8_dense" in k.name for k in with_dots), with_dots


@pytest.mark.slow
def test_window_holds_exactly_the_inferences(rpi5_int8_bundle, images_dir, tmp_path):
    """count-runner on DeiT-tiny int8 for rpi5, 1 and 3 marked inferences after two warm-ups (the second inference
    still runs ~1,100 instructions more than later ones): the windows hold 3x the instructions of one, and
    start-up (verification, loading) stays outside them."""
    from results.arm.boards import arm_board
    from results.arm.contenders import count_runner
    from tests.emulated_board import bare_board

    root = bare_board("cortex-a76", tmp_path / "board").sysroot
    image = sorted(images_dir.iterdir())[0]
    reports = {}
    for repeat in (1, 3):
        reports[repeat], stdout = run_counted(
            [str(count_runner()), str(rpi5_int8_bundle), str(image), WARMUP, str(repeat)],
            cpu=arm_board("rpi5").qemu_cpu, sysroot=root, env={"LD_LIBRARY_PATH": str(rpi5_int8_bundle / "lib")})
        assert reports[repeat].windows == repeat, stdout
    one, three = reports[1].window_instructions, reports[3].window_instructions
    assert three == 3 * one
    outside = (reports[3].total - reports[1].total) - 2 * one  # the loop and marks around two more inferences
    assert 0 <= outside < 2 * 1000
    assert reports[1].total - one > one  # verifying and loading the bundle cost more than an inference


def test_arm_command_refuses_what_it_cannot_count(host_bundle, rpi5_int8_bundle, tmp_path):
    """One line naming what is wrong, exit 2, nothing written: an x86 bundle, a board without a preset or
    without a counting model, no emulator on PATH."""
    from tests.helpers import assert_one_line_error, run_module

    out = tmp_path / "out"
    cases = [((host_bundle, "--board", "rpi5"), {}, ("x86_64", "--target rpi5")),
             ((rpi5_int8_bundle, "--board", "pi9"), {}, ("unknown target 'pi9'",)),
             ((rpi5_int8_bundle, "--board", "jetson-orin-nano"), {}, ("no ARM counting model", "rpi5")),
             ((rpi5_int8_bundle, "--board", "rpi5"), {"PATH": str(tmp_path)}, ("qemu-aarch64 not found", "qemu-user"))]
    for args, env, fragments in cases:
        result = run_module("results", "arm", *args, "--peers", "none", "--out", out, env=env, timeout_s=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert_one_line_error(result, *fragments)
    assert not out.exists()
