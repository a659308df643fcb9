"""compile.kernels: exact int8 matmuls on every target family, bit-exact against numpy's int64 product; the
int4-stored weights (w4a8: nibbles and group multipliers widened in the GEMM's function) among the dense cases.

Host x86 (AVX-512 VNNI where the CPU has it, and the widening fallback) runs here; rpi5 (Cortex-A76,
sdot) and rpi4 (Cortex-A72, NEON smull/sadalp) run on the emulated board; the Jetson (CUDA sm_87)
build is compiled only (no GPU here), its formulation checked for exactness on the CPU.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from compile.kernels import emit_int8_batch_matmul, emit_int8_dense
from compile.kernels.dot_kernel import dot_kernel_for
from compile.kernels.int4_unpack import Int4Operand
from targets import load_preset
from targets.cpu_features import cpu_features, machine_arch
from tests.cuda_tools import kernel_sass, needs_cuobjdump, needs_nvcc
from tests.helpers import cpu_executable, cross_compiled_library, lower_for_cpu

RNG_SEED = 0


@dataclass(frozen=True)
class Case:
    """One matmul: dense (x [*lead, M, K] @ constant W [K, N]) or batch (a [B, M, K] @ b)."""

    name: str
    kind: str  # "dense" | "batch"
    m: int
    k: int
    n: int
    lhs_dtype: str
    lead: tuple[int, ...] = ()
    transpose_b: bool = False
    x_columns: tuple[int, int, int] | None = None  # dense on x[..., start:stop] of x [..., width]: (start, stop, width)
    symmetric: bool = False  # b within [-127, 127], a batch operand cast from its clip (as requantized tensors are)
    int4_group: int | None = None  # dense: the weight stored as int4 codes times multipliers per group of rows (0: one)

    @property
    def lhs_shape(self) -> tuple[int, ...]:
        return (*self.lead, self.m, self.x_columns[2] if self.x_columns else self.k)


CASES = (
    Case("head_m1", "dense", 1, 192, 1000, "int8"),
    Case("qkv_u8", "dense", 197, 192, 576, "uint8"),
    Case("fc2", "dense", 196, 768, 192, "int8", lead=(1,)),
    Case("fc2_slice_704", "dense", 17, 704, 192, "uint8", x_columns=(0, 704, 768)),
    Case("fc2_slice_64", "dense", 17, 64, 192, "int8", x_columns=(704, 768, 768)),
    Case("odd", "dense", 5, 197, 13, "int8", lead=(2,)),
    Case("scores_qk", "batch", 197, 64, 197, "int8", lead=(3,), transpose_b=True),
    Case("probs_v", "batch", 197, 197, 64, "uint8", lead=(3,)),
    Case("odd_batch", "batch", 7, 9, 5, "int8", lead=(2,)),
    Case("odd_batch_t", "batch", 3, 6, 33, "uint8", lead=(2,), transpose_b=True),
    Case("tiny", "dense", 1, 1, 1, "uint8"),
    Case("tiny_batch", "batch", 1, 3, 1, "int8", lead=(1,), transpose_b=True),
    Case("w4_qkv_g32", "dense", 197, 192, 576, "uint8", int4_group=32),
    Case("w4_head_g64", "dense", 1, 192, 1000, "int8", int4_group=64),
    Case("w4_fc2_slice_g128", "dense", 17, 64, 192, "int8", x_columns=(704, 768, 768), int4_group=128),
    Case("w4_odd_channel", "dense", 5, 197, 13, "int8", lead=(2,), int4_group=0),
)
# Symmetric b: the ARMv8.0 tiles (compile.kernels.arm_tiles c16) take them; with a -128 in b the cases above do not
SYMMETRIC_CASES = tuple(replace(case, name=f"{case.name}_sym", symmetric=True) for case in CASES
                        if case.name in ("qkv_u8", "fc2", "fc2_slice_704", "odd", "scores_qk", "probs_v", "odd_batch_t"))


def _operands(case: Case, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random operands with their extremes forced in: a row of the lhs minimum, a row of its maximum,
    a column of -128 in the rhs, so the largest sums of both signs occur."""
    info = np.iinfo(case.lhs_dtype)
    lhs = rng.integers(info.min, info.max + 1, case.lhs_shape).astype(case.lhs_dtype)
    lhs[..., 0, :] = info.min
    lhs[..., -1, :] = info.max
    b_shape = (case.n, case.k) if case.transpose_b else (case.k, case.n)
    low = -127 if case.symmetric else -128
    rhs = rng.integers(low, 128, ((*case.lead, *b_shape) if case.kind == "batch" else b_shape)).astype(np.int8)
    rhs[..., 0] = low
    if case.int4_group is not None:
        return lhs, _int4_operand(case, rng)
    return lhs, rhs


def _int4_operand(case: Case, rng: np.random.Generator) -> Int4Operand:
    """Codes in [-7, 7] (a column of -7) and multipliers in 1..18 (a group of 18) for the rows the case reads."""
    first = case.x_columns[0] if case.x_columns else 0
    group = case.int4_group
    groups = (first + case.k - 1) // group - first // group + 1 if group else 1
    codes = rng.integers(-7, 8, (case.k, case.n)).astype(np.int8)
    codes[:, 0] = -7
    multipliers = rng.integers(1, 19, (groups, case.n)).astype(np.uint8)
    multipliers[-1] = 18
    return Int4Operand(codes, multipliers, group, first)


def _widened(operand: Int4Operand) -> np.ndarray:
    """codes * the multiplier of each row's group (rows counted from the layer's first row)."""
    first = operand.first_row
    rows = np.arange(first, first + len(operand.codes))
    step = rows // operand.group - first // operand.group if operand.group else np.zeros_like(rows)
    return operand.codes.astype(np.int64) * operand.multipliers[step]


def _reference(case: Case, lhs: np.ndarray, rhs: np.ndarray | Int4Operand) -> np.ndarray:
    rhs = _widened(rhs) if isinstance(rhs, Int4Operand) else rhs
    b = np.swapaxes(rhs, -1, -2) if case.transpose_b else rhs
    a = lhs[..., case.x_columns[0]:case.x_columns[1]] if case.x_columns else lhs
    return a.astype(np.int64) @ b.astype(np.int64)


def _add_case(bb: relax.BlockBuilder, case: Case, rhs: np.ndarray, target) -> None:
    x = relax.Var("x", relax.TensorType(case.lhs_shape, case.lhs_dtype))
    params = [x]
    if case.kind == "batch":
        params.append(relax.Var("b", relax.TensorType(rhs.shape, "int8")))
    with bb.function(case.name, params):
        with bb.dataflow():
            if case.kind == "dense":
                y = emit_int8_dense(bb, x, rhs, target, x_columns=case.x_columns and case.x_columns[:2])
            else:
                b = bb.emit(relax.op.astype(relax.op.clip(params[1], -127, 127), "int8")) if case.symmetric else params[1]
                y = emit_int8_batch_matmul(bb, x, b, target, transpose_b=case.transpose_b)
            out = bb.emit_output(y)
        bb.emit_func_output(out)


@dataclass
class Suite:
    """The cases' operands, references, and one Relax module holding a function per case."""

    module: tvm.IRModule
    inputs: dict[str, list[np.ndarray]]
    expected: dict[str, np.ndarray]


def _suite(target, cases: tuple[Case, ...] = CASES) -> Suite:
    rng = np.random.default_rng(RNG_SEED)
    bb = relax.BlockBuilder()
    inputs, expected = {}, {}
    for case in cases:
        lhs, rhs = _operands(case, rng)
        _add_case(bb, case, rhs, target)
        inputs[case.name] = [lhs] if case.kind == "dense" else [lhs, rhs]
        expected[case.name] = _reference(case, lhs, rhs)
    return Suite(bb.get(), inputs, expected)


def _run_on_host(executable, suite: Suite) -> dict[str, np.ndarray]:
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return {name: vm[name](*map(tvm.runtime.tensor, args)).numpy() for name, args in suite.inputs.items()}


def _assert_exact(got: dict[str, np.ndarray], suite: Suite) -> None:
    for name, expected in suite.expected.items():
        assert got[name].dtype == np.int32 and got[name].shape == expected.shape, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)


# ---- host -----------------------------------------------------------------------------------------

def test_presets_pick_their_dot_instruction():
    names = {preset: dot_kernel_for(load_preset(preset).target()).name
             for preset in ("x86-avx512", "rpi5", "rpi4", "aarch64")}
    assert names == {"x86-avx512": "x86-vnni", "rpi5": "arm-sdot", "rpi4": "arm-neon-c16", "aarch64": "arm-neon-c16"}
    assert dot_kernel_for(load_preset("jetson").target().host).name == "arm-sdot"  # Orin's A78AE
    sapphire_rapids = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "sapphirerapids"})
    assert dot_kernel_for(sapphire_rapids).name == "x86-amx"


def test_amx_kernels_are_exact():
    """Intel AMX column panels (compile.kernels.amx): compiled everywhere, run where this CPU and Linux grant
    the tile unit. Cases below one tile of rows (the classifier head, the odd shapes) take the VNNI fallback."""
    from targets.cpu_features import request_amx_tiles

    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "sapphirerapids"})
    suite = _suite(target)
    executable = cpu_executable(suite.module, target)
    if machine_arch() != "x86_64" or not request_amx_tiles():
        pytest.skip("compiled only: running needs a CPU with AMX and Linux 5.16+")
    _assert_exact(_run_on_host(executable, suite), suite)


def test_host_kernels_are_exact():
    target = load_preset("host").target()
    suite = _suite(target)
    _assert_exact(_run_on_host(cpu_executable(suite.module, target), suite), suite)


@pytest.mark.parametrize("mcpu, kernel", [("haswell", "x86-avx2"), ("x86-64", "widening")])
def test_x86_without_vnni_is_exact(mcpu, kernel):
    """x86 CPUs without AVX-512 VNNI: AVX2 vpmaddwd, or (baseline x86-64) the untensorized kernel."""
    if machine_arch() != "x86_64" or (kernel == "x86-avx2" and "avx2" not in cpu_features()):
        pytest.skip(f"needs an x86-64 host{' with AVX2' if kernel == 'x86-avx2' else ''}")
    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu})
    assert dot_kernel_for(target).name.startswith(kernel)
    suite = _suite(target)
    _assert_exact(_run_on_host(cpu_executable(suite.module, target), suite), suite)


def _requantize_model(target, weight: np.ndarray, bias: np.ndarray, scale: np.ndarray):
    """int8 x [M, K] -> int8 round(clip((x @ W + bias) * scale)) + residual, the quantized graph's epilogue."""
    m, k = 197, weight.shape[0]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "int8"))
    residual = relax.Var("residual", relax.TensorType((m, weight.shape[1]), "float32"))
    with bb.function("main", [x, residual]):
        with bb.dataflow():
            acc = emit_int8_dense(bb, x, weight, target)
            acc = bb.emit(relax.op.add(acc, relax.const(bias)))
            y = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale)))
            y = bb.emit(relax.op.add(y, residual))
            q = bb.emit(relax.op.astype(relax.op.clip(relax.op.round(y), -128, 127), "int8"))
            out = bb.emit_output(q)
        bb.emit_func_output(out)
    return bb.get()


def test_fused_requantize_epilogue_is_exact_and_fused():
    target = load_preset("host").target()
    rng = np.random.default_rng(RNG_SEED)
    weight = rng.integers(-128, 128, (192, 768)).astype(np.int8)
    bias = rng.integers(-(2**20), 2**20, 768).astype(np.int32)
    scale = (rng.random(768) * 2e-4).astype(np.float32)
    x = rng.integers(-128, 128, (197, 192)).astype(np.int8)
    residual = (rng.standard_normal((197, 768)) * 20).astype(np.float32)

    lowered = lower_for_cpu(_requantize_model(target, weight, bias, scale), target)
    kernels = [f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == 1, "bias, scale, residual and requantize are fused into the GEMM's function"
    got = relax.VirtualMachine(relax.build(lowered, target=target), tvm.cpu())["main"](
        tvm.runtime.tensor(x), tvm.runtime.tensor(residual)).numpy()

    acc = (x.astype(np.int64) @ weight.astype(np.int64) + bias).astype(np.float32)
    expected = np.clip(np.round(acc * scale + residual), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, expected)


def test_gemms_keep_their_noalias_compute_functions_beside_hand_written_kernels():
    """A GEMM next to a hand-written kernel (a TVMScript PrimFunc has no tirx.noalias of its own) whose name sorts
    last: TVM 0.27's LLVM codegen would apply that kernel's missing flag to every function, inlining their noalias
    compute functions away (the GEMMs ran up to 1.6x slower); compile.lowering.cpu marks every function noalias."""
    from compile.graph.emitter import Emitter
    from compile.kernels.row_kernels import emit_float_softmax

    target = load_preset("host").target()
    weight = np.random.default_rng(RNG_SEED).integers(-128, 128, (64, 197)).astype(np.int8)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((3, 197, 64), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            logits = emit_int8_dense(bb, x, weight, target)
            out = bb.emit_output(emit_float_softmax(Emitter(bb, target), logits, 0.01, None, np.full(3, 255)))
        bb.emit_func_output(out)
    lowered = lower_for_cpu(bb.get(), target)
    assert max(gv.name_hint for gv in lowered.functions).startswith("softmax_float")
    asm = relax.build(lowered, target=target).mod.imports[0].inspect_source("asm")
    assert re.search(r"^int8_dense\w*_compute_:", asm, re.MULTILINE)


def test_segmented_layer_and_quantized_attention_are_exact():
    """The quantized graph's patterns: a layer split into K segments (x_columns, one segment scaled
    by a left shift, summed in the epilogue), and attention scores from a requantized q."""
    target = load_preset("host").target()
    rng = np.random.default_rng(RNG_SEED)
    x = rng.integers(-128, 128, (197, 768)).astype(np.int8)
    weight = rng.integers(-128, 128, (768, 192)).astype(np.int8)
    q = (rng.standard_normal((3, 197, 64)) * 40).astype(np.float32)
    k = rng.integers(-128, 128, (3, 197, 64)).astype(np.int8)

    bb = relax.BlockBuilder()
    xv, qv, kv = (relax.Var(name, relax.TensorType(a.shape, str(a.dtype))) for name, a in (("x", x), ("q", q), ("k", k)))
    with bb.function("main", [xv, qv, kv]):
        with bb.dataflow():
            wide = emit_int8_dense(bb, xv, weight[:704], target, x_columns=(0, 704))
            outliers = emit_int8_dense(bb, xv, weight[704:], target, x_columns=(704, 768))
            acc = bb.emit(relax.op.add(wide, relax.op.left_shift(outliers, relax.const(2, "int32"))))
            q8 = bb.emit(relax.op.astype(relax.op.clip(relax.op.round(qv), -128, 127), "int8"))
            scores = emit_int8_batch_matmul(bb, q8, kv, target, transpose_b=True)
            logits = bb.emit(relax.op.multiply(relax.op.astype(scores, "float32"), relax.const(0.125, "float32")))
            out = bb.emit_output(relax.Tuple([acc, logits]))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(cpu_executable(bb.get(), target), tvm.cpu())
    acc, logits = vm["main"](*map(tvm.runtime.tensor, (x, q, k)))

    wide = x[:, :704].astype(np.int64) @ weight[:704].astype(np.int64)
    outliers = x[:, 704:].astype(np.int64) @ weight[704:].astype(np.int64)
    np.testing.assert_array_equal(acc.numpy(), wide + (outliers << 2))
    q8 = np.clip(np.round(q), -128, 127).astype(np.int64)
    expected = (q8 @ k.astype(np.int64).transpose(0, 2, 1)).astype(np.float32) * np.float32(0.125)
    np.testing.assert_array_equal(logits.numpy(), expected)


def test_float_matmuls_are_not_taken_by_the_int8_rule():
    from compile.lowering.cpu import fuse_for_cpu
    from compile.schedule.int8_gemm import schedule_int8_gemm

    target = load_preset("host").target()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((197, 192), "float32"))
    i = relax.Var("i", relax.TensorType((197, 192), "int8"))
    with bb.function("main", [x, i]):
        with bb.dataflow():
            f = bb.emit(relax.op.matmul(x, relax.const(np.ones((192, 64), np.float32))))
            j = bb.emit(relax.op.matmul(i, relax.const(np.ones((192, 64), np.int8)), out_dtype="int32"))
            out = bb.emit_output(relax.Tuple([f, j]))
        bb.emit_func_output(out)
    fused = fuse_for_cpu(bb.get(), target)
    prim_funcs = [f for f in fused.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(prim_funcs) == 2
    assert all(schedule_int8_gemm(f, target) is None for f in prim_funcs)


# ---- aarch64: objects and the emulated board -------------------------------------------------------

def _instructions(library: Path) -> set[str]:
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.skip("aarch64-linux-gnu-objdump not installed (binutils-aarch64-linux-gnu)")
    listing = subprocess.run([objdump, "-d", str(library)], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^\s+[0-9a-f]+:\s+[0-9a-f]{8}\s+(\w+)", listing, flags=re.M))


@pytest.fixture(scope="module")
def arm_libraries(tmp_path_factory) -> dict[str, tuple[Path, Suite]]:
    """rpi5, rpi4 and generic aarch64 builds of the cases (cross-compiled once for the module)."""
    out = tmp_path_factory.mktemp("int8_arm")
    built = {}
    for name in ("rpi5", "rpi4", "aarch64"):
        suite = _suite(load_preset(name).target(), CASES + SYMMETRIC_CASES)
        built[name] = (cross_compiled_library(suite.module, name, out / f"{name}.so"), suite)
    return built


def test_arm_objects_use_their_dot_instructions(arm_libraries):
    rpi5, rpi4, generic = (_instructions(arm_libraries[name][0]) for name in ("rpi5", "rpi4", "aarch64"))
    assert {"sdot", "st4"} <= rpi5  # st4: a runtime b [K, N] (probs_v's v) packed by interleaves (arm_tiles)
    for without_dotprod in (rpi4, generic):
        assert not without_dotprod & {"sdot", "udot", "usdot"}
        assert {"smull", "smlal2", "sadalp", "addp"} <= without_dotprod  # c16 tiles (symmetric b), and the widening


@pytest.mark.slow
@pytest.mark.parametrize("preset, cpu", [("rpi5", "cortex-a76"), ("rpi4", "cortex-a72")])
def test_arm_kernels_are_exact_on_emulated_board(arm_libraries, preset, cpu, tmp_path):
    from tests.emulated_board import emulated_board, run_vm_functions

    library, suite = arm_libraries[preset]
    _assert_exact(run_vm_functions(emulated_board(cpu), library, suite.inputs, tmp_path), suite)


# ---- CUDA ----------------------------------------------------------------------------------------

def test_cuda_formulation_is_exact_on_cpu():
    """The Relax graph emitted for CUDA, both forms (int8 x int8 for tensor cores, uint8-shifted for dp4a, each
    with its correction), run by the CPU."""
    from compile.kernels.cuda_matmul import use_tensor_cores

    target = load_preset("jetson").target()
    assert {use_tensor_cores(target, c.m, c.n, c.k) for c in CASES} == {True, False}
    suite = _suite(target)
    host = load_preset("host").target()
    _assert_exact(_run_on_host(cpu_executable(suite.module, host), suite), suite)


@needs_nvcc
@needs_cuobjdump
def test_cuda_int8_gemms_use_tensor_cores_where_they_pay(tmp_path):
    """sm_87: the large GEMMs run IMMA (int8 tensor cores), the tiny ones (head, M = 1) keep dp4a."""
    from compile.cuda import compile_device_code
    from compile.kernels.cuda_matmul import use_tensor_cores
    from compile.lowering.cuda import lower_for_cuda

    preset = load_preset("jetson")
    target = preset.target()
    suite = _suite(target)
    lowered = lower_for_cuda(suite.module, target)
    files = compile_device_code(relax.build(lowered, target=target, relax_pipeline=None), preset)
    sass = {}
    for name, data in files.items():
        (tmp_path / Path(name).name).write_bytes(data)
        sass.update(kernel_sass(tmp_path / Path(name).name))
    for case in CASES:
        funcs = _prim_funcs_called(lowered, case.name)
        kernels = [code for kernel, code in sass.items() if kernel.split("_kernel")[0] in funcs]
        assert kernels, case.name
        imma = sum(code.count("IMMA") for code in kernels)
        print(f"{case.name}: {imma} IMMA")
        assert (imma > 0) == use_tensor_cores(target, case.m, case.n, case.k), case.name


def _prim_funcs_called(mod: tvm.IRModule, name: str) -> set[str]:
    """The TIR functions Relax function `name` calls, itself or through its captured CUDA graphs."""
    called = set()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar):
            called.add(expr.op.name_hint)

    for gv, func in mod.functions.items():
        if gv.name_hint == name or gv.name_hint.startswith(f"{name}_cuda_graph"):
            relax.analysis.post_order_visit(func, visit)
    return {n for n in called if isinstance(mod[n], tvm.tirx.PrimFunc)}
