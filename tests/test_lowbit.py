"""4-bit weights and formats per layer: int4 packing, GPTQ against a direct reference and against
round-to-nearest on real layers, the torch simulation's parity with timm, the MoFQ chooser on synthetic
costs and as the layer table of a tiny model, the graph's refusal of formats it does not emit, and the
command line's errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from compile.graph.emitter import int4_operand
from compile.quant.formats import weight_bytes
from compile.quant.gptq import dampened, quantize_gptq
from compile.quant.int4 import PAIR_ROWS, int4_scales, pack_int4, packed_bytes, quantize_rtn, row_scales, unpack_int4
from compile.quant.mofq import FormatCosts, choose
from runtime.errors import EdgevitError
from tests.helpers import TINY_MODEL, assert_one_line_error, run_module, tiny_vit_folder

MODEL = "deit_tiny_patch16_224"


# -- int4 storage -------------------------------------------------------------------------------------

def test_int4_packing_layout_and_round_trip():
    rng = np.random.default_rng(0)
    codes = rng.integers(-8, 8, size=(21, 5)).astype(np.int8)  # K not a multiple of 8: zero-padded
    packed = pack_int4(codes)
    assert packed.shape == (-(-21 // 8) * 4, 5) and (unpack_int4(packed, 21) == codes).all()
    padded = np.zeros((24, 5), np.int64)
    padded[:21] = codes
    for row in range(packed.shape[0]):  # byte (4b + j) = row 8b + j (low nibble) | row 8b + 4 + j (high nibble)
        block, j = divmod(row, PAIR_ROWS)
        low, high = padded[8 * block + j] & 0xF, padded[8 * block + PAIR_ROWS + j] & 0xF
        assert (packed[row] == low | high << 4).all()


def test_every_byte_widens_exactly():
    """Each of the 256 bytes: the shifts unpack_int4 uses give the two nibbles' signed values (as do b << 4 and
    b & 0xF0 read as int8, times 16), and packing gives the byte back."""
    every = np.arange(256, dtype=np.uint8).reshape(1, 256).repeat(PAIR_ROWS, axis=0)
    codes = unpack_int4(every, 2 * PAIR_ROWS)
    low, high = codes[:PAIR_ROWS].astype(np.int64), codes[PAIR_ROWS:].astype(np.int64)
    assert (low == ((every & 0xF).astype(np.int64) ^ 8) - 8).all() and (high == ((every >> 4).astype(np.int64) ^ 8) - 8).all()
    assert ((every << 4).view(np.int8) == 16 * low).all() and ((every & 0xF0).view(np.int8) == 16 * high).all()
    assert (pack_int4(codes) == every).all()


@pytest.mark.parametrize("rows, columns, group", [(192, 576, 64), (192, 1000, 128), (768, 192, 32), (21, 5, 0)])
def test_round_to_nearest_and_sizes(rows, columns, group):
    """Scales are whole multiples 1..18 of a base scale per column (18 for per-column scales), codes the nearest steps
    of them, and the widened weight (codes x multipliers, what the int8 GEMM multiplies) fits int8 and times the base
    scales is the dequantized weight; the chosen clips err no more than absmax / 7 put on the same grid; sizes
    follow from the shape alone."""
    rng = np.random.default_rng(rows)
    weight = rng.standard_t(4, size=(rows, columns)) * rng.uniform(0.01, 1.0, size=columns)
    weight[:, 0] = 0.0  # an all-zero column gets a usable scale
    int4 = quantize_rtn(weight, group)
    multiplier = int4.multiplier.astype(np.int64)
    assert multiplier.min() >= 1 and multiplier.max() == 18 and (multiplier == 18).all() == (group == 0)
    scales = row_scales(int4.scales, group, rows)
    assert (int4.codes() == np.clip(np.round(weight / scales), -7, 7)).all()
    widened = int4_operand(int4, 0, rows).widened().astype(np.int64)
    assert np.abs(widened).max() <= 126 and (widened == int4.codes() * row_scales(multiplier, group, rows)).all()
    assert np.array_equal(widened * int4.column_scale.astype(np.float64), int4.dequantize())
    starts = np.arange(0, rows, group or rows)
    base = int4.column_scale.astype(np.float64)
    on_grid = np.clip(np.round(np.maximum.reduceat(np.abs(weight), starts, axis=0) / 7 / base), 1, 18) * base
    plain = row_scales(on_grid, group, rows)
    assert ((weight - int4.dequantize()) ** 2).sum() <= ((weight - np.clip(np.round(weight / plain), -7, 7) * plain) ** 2).sum()
    assert int4.nbytes == packed_bytes(rows, columns, group) == weight_bytes("w4a8", rows, columns, group)
    assert int4.nbytes < weight_bytes("int8", rows, columns, group)


# -- GPTQ ---------------------------------------------------------------------------------------------

def _direct_gptq(weight, hessian, group, act_order):
    """The same greedy rounding without Cholesky or lazy blocks: before each row, invert H over the rows not yet
    rounded and apply the Optimal Brain Surgeon update to them."""
    column, multiplier = int4_scales(weight, group)
    scales = row_scales(column.astype(np.float64) * multiplier, group, len(weight))
    w, h = dampened(weight, hessian, 0.01)
    order = list(np.argsort(-np.diag(h), kind="stable")) if act_order else list(range(len(w)))
    codes = np.zeros(w.shape, dtype=np.int8)
    for i, k in enumerate(order):
        rest = order[i:]
        inverse = np.linalg.inv(h[np.ix_(rest, rest)])
        codes[k] = np.clip(np.round(w[k] / scales[k]), -7, 7)
        w[rest[1:]] -= np.outer(inverse[0, 1:] / inverse[0, 0], w[k] - codes[k] * scales[k])
    return codes


@pytest.mark.parametrize("group, act_order", itertools.product((0, 4), (False, True)))
def test_gptq_equals_direct_reference(group, act_order):
    rng = np.random.default_rng(group + act_order)
    x = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))  # correlated inputs
    weight = rng.normal(size=(12, 5))
    hessian = x.T @ x
    hessian[3, :] = hessian[:, 3] = 0.0  # an input that is always 0
    int4 = quantize_gptq(weight, hessian, group, act_order=act_order, block_rows=5, passes=0)  # blocks cut across rows
    assert (int4.codes() == _direct_gptq(weight, hessian, group, act_order)).all()


@pytest.mark.parametrize("group", (0, 4))
def test_descent_lowers_gptq_objective_to_a_single_code_minimum(group):
    """After the sweeps no code moved by one step (inside [-7, 7]) lowers tr(E^T H E), each sweep never raised it,
    and the result is below GPTQ's greedy pass alone; every objective is computed here, directly."""
    rng = np.random.default_rng(7 + group)
    x = rng.normal(size=(60, 16)) @ rng.normal(size=(16, 16)) + rng.normal(size=16) * 3  # correlated, off-centre
    weight, hessian = rng.normal(size=(16, 6)), x.T @ x

    def direct_objective(codes):
        error = weight - scales * codes
        return float(np.trace(error.T @ hessian @ error))

    greedy = quantize_gptq(weight, hessian, group, passes=0)
    scales = row_scales(greedy.scales, group, len(weight))
    sweeps = [direct_objective(quantize_gptq(weight, hessian, group, passes=p).codes()) for p in range(0, 6)]
    assert all(later <= earlier + 1e-9 for earlier, later in zip(sweeps, sweeps[1:])) and sweeps[-1] < sweeps[0]
    codes = quantize_gptq(weight, hessian, group, passes=50).codes().astype(np.int64)
    best = direct_objective(codes)
    for k, n, step in itertools.product(range(codes.shape[0]), range(codes.shape[1]), (-1, 1)):
        if abs(codes[k, n] + step) <= 7:
            moved = codes.copy()
            moved[k, n] += step
            assert direct_objective(moved) >= best - 1e-9 * abs(best), (k, n, step)


def _quantized(model, spec, config):
    """(QuantizedViT, layer table) of a timm model without ToMe."""
    from compile.model.vit import describe
    from compile.quant.quantize import quantize

    vit = describe(model, [0] * len(model.blocks), spec.mean, spec.std)
    return quantize(model, vit, spec, config, log=lambda message: None)


@pytest.fixture(scope="module")
def w4a8(data):
    """DeiT-tiny (real weights) quantized to W4A8 (GPTQ, groups of 32, the default) on 8 calibration images: (model,
    QuantizedViT, layer table, config)."""
    from compile.model.models import load_model, model_spec
    from compile.quant.config import QuantConfig

    model = load_model(MODEL)
    config = QuantConfig(mode="w4a8", calib_count=8)
    return model, *_quantized(model, model_spec(MODEL), config), config


def test_gptq_beats_round_to_nearest_on_every_layer(w4a8):
    """Every GEMM's output error on calibration rows (int8 input, int4 weights): GPTQ's below RTN's, both measured;
    the table gives every linear w4a8 and the attention matmuls int8."""
    _, qvit, formats, config = w4a8
    for linear in qvit.linears():
        assert formats[linear.name] == "w4a8" and linear.int4.group == config.w4_group
        assert linear.errors["w4a8-gptq"] < linear.errors["w4a8-rtn"], (linear.name, linear.errors)
        assert linear.errors["w4a8"] == linear.errors["w4a8-gptq"] and linear.errors["int8"] == linear.rel_error
        assert linear.int4.nbytes == weight_bytes("w4a8", *linear.weight.shape, config.w4_group)
    assert {formats[block.attention] for block in qvit.vit.blocks} == {"int8"}
    assert formats.input_dtype(qvit.vit) == "uint8" and not formats.integer_only


def test_int8_format_matches_the_integer_accumulator(w4a8):
    """format_error's int8 GEMM (float weights times steps) gives scales' integer-accumulator error on the same rows."""
    from compile.model.models import model_spec
    from compile.quant.calibration import calibrate
    from compile.quant.format_error import format_error, format_linear
    from compile.quant.scales import relative_error

    model, qvit, _, config = w4a8
    stats = calibrate(model, model_spec(MODEL), [0] * len(model.blocks), config, log=lambda message: None)
    for index, name, site in ((0, "qkv", "blocks.0.ln1"), (3, "proj", "blocks.3.attn_out")):
        linear, weight = getattr(qvit.blocks[index], name), getattr(qvit.vit.blocks[index], name).weight
        rows = stats[site].sample_rows()
        assert format_error(format_linear(linear, "int8", weight), linear, weight, rows) == pytest.approx(
            relative_error(linear, weight, rows), rel=1e-9)


def test_simulated_float32_equals_timm_and_margins(w4a8, images_dir, labels_csv):
    """Every GEMM replaced by its float32 format and no attention rounding: timm's logits; the accuracy estimate's
    margins are those logits' top-1 minus runner-up."""
    from compile.model.models import model_spec
    from compile.quant.accuracy_proxy import margin_changes
    from compile.quant.calibration import load_images
    from compile.quant.simulate import simulated_model
    from runtime.evaluate import read_labels

    model, qvit, _, _ = w4a8
    rows = read_labels(labels_csv, skip=300, limit=3)
    images = load_images([images_dir / name for name, _ in rows], model_spec(MODEL).preprocess())
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(images))
        floats = simulated_model(model, qvit, {linear.name: "float32" for linear in qvit.linears()}, quantizer=None)
        assert torch.allclose(floats(torch.from_numpy(images)), expected, atol=1e-4, rtol=1e-4)
    changes = margin_changes(model, qvit, images, [label for _, label in rows], ("float32", "w4a8"))
    top2 = expected.topk(2).values
    assert np.allclose(changes.margin, (top2[:, 0] - top2[:, 1]).numpy(), rtol=1e-4, atol=1e-4)
    assert (changes.correct == (expected.argmax(-1).numpy() == np.array([label for _, label in rows]))).all()
    assert all((d["float32"] == 0).all() and (d["w4a8"] > 0).any() for d in changes.delta2.values())


def test_mixed_size_budget_gives_the_layer_table_the_graph_reads(data):
    """--quant mixed --size-mb on a random-init tiny ViT (16 calibration images, 4 held out): a layer table with every
    linear in an offered format, the attention matmuls in int8 or float32 (recorded in the recipe), the parameters
    within the budget; the simulation runs it; the graph emits its w4a8 GEMMs."""
    from compile.graph.builder import emit_graph
    from compile.quant.config import QuantConfig
    from compile.quant.mofq import parameter_bytes
    from compile.quant.simulate import simulated_model
    from targets import load_preset

    model, spec = _tiny_model()
    config = QuantConfig(mode="mixed", calib_count=16, size_mb=0.13)
    qvit, formats = _quantized(model, spec, config)
    chosen = {formats[linear.name] for linear in qvit.linears()}
    attention = {block.attention: formats[block.attention] for block in qvit.vit.blocks}
    assert chosen <= {"float32", "int8", "w4a8"} and set(attention.values()) <= {"float32", "int8"}
    assert qvit.recipe["choice"]["attention_formats"] == attention
    size = parameter_bytes(qvit, formats, config)
    assert size <= 0.13e6 and size == pytest.approx(qvit.recipe["choice"]["size_mb"] * 1e6)
    with torch.no_grad():
        logits = simulated_model(model, qvit, formats)(torch.zeros(1, 3, spec.image_size, spec.image_size))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()
    assert "w4a8" in chosen, chosen  # int8 GEMMs take 0.17 MB with the rest, w4a8 ones 0.10
    module = emit_graph(qvit.vit, formats, qvit, load_preset("host").target())
    assert any("int8_dense_int4" in gv.name_hint for gv in module.functions)


def _tiny_model():
    """(random-init tiny ViT at 96 px, its spec)."""
    from compile.model.models import build_model, find_checkpoint, model_spec

    checkpoint = find_checkpoint(TINY_MODEL, tiny_vit_folder())
    spec = model_spec(TINY_MODEL, **{**checkpoint.preprocessing, "image_size": 96})
    return build_model(spec, checkpoint).eval(), spec


def test_block_rounding_lowers_each_block_error_one_step_from_gptq():
    """--w4-rounding block on a random-init tiny ViT (16 calibration images): every code within one step of GPTQ's
    (the same recipe's starting point), some moved; each block's recorded output error below GPTQ's; block 0's
    errors recomputed here from the two simulated models and the float model on the same images."""
    import dataclasses

    from compile.model.tome_patch import transformer_blocks
    from compile.quant.calibration import calibration_split, load_images
    from compile.quant.config import QuantConfig
    from compile.quant.simulate import simulated_model

    model, spec = _tiny_model()
    config = QuantConfig(mode="w4a8", calib_count=16, w4_rounding="block")
    learned, formats = _quantized(model, spec, config)
    gptq, _ = _quantized(model, spec, dataclasses.replace(config, w4_rounding="gptq"))
    moved = 0
    for new, old in zip(learned.linears(), gptq.linears()):
        step = np.abs(new.int4.codes().astype(int) - old.int4.codes())
        assert step.max() <= 1 and np.abs(new.int4.codes()).max() <= 7, new.name
        assert np.array_equal(new.int4.scales, old.int4.scales), new.name
        moved += int(step.sum())
    assert moved > 0
    record = learned.recipe["block_rounding"]["block_output_mse"]
    assert len(record) == len(model.blocks) and any(block["kept"] for block in record)
    assert all(block["learned"] < block["gptq"] for block in record if block["kept"])

    images = torch.from_numpy(load_images(calibration_split(config).fit, spec.preprocess()))

    def block0(net):
        out = []
        hook = transformer_blocks(net)[0].register_forward_hook(lambda module, args, output: out.append(output))
        with torch.no_grad():
            net(images)
        hook.remove()
        return out[0].double()

    target = block0(model)
    errors = [float(((block0(simulated_model(model, q, formats)) - target) ** 2).mean()) for q in (gptq, learned)]
    assert errors[0] == pytest.approx(record[0]["gptq"], rel=1e-4)
    assert errors[1] == pytest.approx(record[0]["learned"] if record[0]["kept"] else record[0]["gptq"], rel=1e-4)
    assert errors[1] < errors[0]


# -- the chooser ----------------------------------------------------------------------------------------

FORMATS = ("float32", "float16", "int8", "w4a8")


def synthetic_costs(layers: int = 6, images: int = 40, seed: int = 0) -> FormatCosts:
    """Random layer shapes; each format moves the margins more than the one before it (float32: not at all)."""
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.choice([192, 384, 768])), int(rng.choice([192, 576, 768]))) for _ in range(layers)]
    sizes = np.array([[weight_bytes(fmt, k, n, 64) for fmt in FORMATS] for k, n in shapes])
    scale = np.array([0.0, 1e-3, 0.05, 0.4])[None, :, None] * rng.uniform(0.1, 2.0, size=(layers, 1, 1))
    delta2 = scale * rng.exponential(size=(layers, len(FORMATS), images))
    return FormatCosts(tuple(f"layer{i}" for i in range(layers)), FORMATS, sizes, delta2,
                       margin=rng.exponential(2.0, size=images), correct=rng.random(images) < 0.8,
                       base=rng.exponential(0.01, size=images), other_bytes=100_000)


def _moves(choice: np.ndarray, options: int):
    for layer, option in itertools.product(range(len(choice)), range(options)):
        if option != choice[layer]:
            moved = choice.copy()
            moved[layer] = option
            yield moved


@pytest.mark.parametrize("seed", [0, 1])
def test_max_drop_met_and_no_single_move_is_smaller(seed):
    """Within the drop budget, no layer alone can move to a smaller format, and no format everywhere that meets the
    budget is smaller."""
    table = synthetic_costs(seed=seed)
    low, high = (table.drop_points(table.everywhere(fmt)) for fmt in ("float32", "w4a8"))
    for budget in np.linspace(low, high, 6)[1:]:
        choice = choose(table, max_drop=budget)
        assert table.drop_points(choice) <= budget
        for moved in [*_moves(choice, len(FORMATS)), *(table.everywhere(fmt) for fmt in FORMATS)]:
            assert table.size_bytes(moved) >= table.size_bytes(choice) or table.drop_points(moved) > budget


@pytest.mark.parametrize("seed", [0, 1])
def test_size_budget_met_and_no_single_move_improves(seed):
    table = synthetic_costs(seed=seed)
    low, high = (table.size_bytes(table.everywhere(fmt)) for fmt in ("w4a8", "float32"))
    for size in np.linspace(low, high, 6):
        choice = choose(table, size_mb=size / 1e6)
        assert table.size_bytes(choice) <= size
        for moved in _moves(choice, len(FORMATS)):
            assert table.size_bytes(moved) > size or table.drop_points(moved) >= table.drop_points(choice)


def test_attention_layers_take_only_their_formats_and_meet_budgets_int8_attention_cannot():
    """Attention rows (no bytes; int8 or float32): a --max-drop below what int8 attention alone costs is met by
    float32 attention; no layer ever gets a format it may not take; attention left float32 by the size is int8 where
    the budget allows (no single attention move to int8 stays within it)."""
    table = synthetic_costs(seed=3)
    blocks = 4
    rng = np.random.default_rng(3)
    attention = np.zeros((blocks, len(FORMATS), len(table.margin)))
    images = len(table.margin)
    attention[:, FORMATS.index("int8")] = rng.uniform(0.2, 1.0, size=(blocks, 1)) * rng.exponential(size=(blocks, images))
    allowed = np.array([[True] * len(FORMATS)] * len(table.layers) + [[f in ("float32", "int8") for f in FORMATS]] * blocks)
    costs = FormatCosts(table.layers + tuple(f"blocks.{i}.attention" for i in range(blocks)), FORMATS,
                        np.concatenate([table.bytes, np.zeros((blocks, len(FORMATS)), np.int64)]),
                        np.concatenate([table.delta2, attention]), table.margin, table.correct,
                        np.zeros(len(table.margin)), table.other_bytes, allowed)
    floats = costs.everywhere("float32")
    floats[-blocks:] = FORMATS.index("int8")
    int8_attention = costs.drop_points(floats)  # float32 linears, int8 attention
    assert int8_attention > 0 and costs.everywhere("w4a8")[-blocks:].tolist() == [FORMATS.index("int8")] * blocks
    for budget in (int8_attention * 0.5, int8_attention * 2):
        choice = choose(costs, max_drop=budget)
        assert costs.drop_points(choice) <= budget and allowed[np.arange(len(choice)), choice].all()
        for row in range(len(table.layers), len(choice)):
            if FORMATS[choice[row]] == "float32":
                moved = choice.copy()
                moved[row] = FORMATS.index("int8")
                assert costs.drop_points(moved) > budget
    choice = choose(costs, size_mb=costs.size_bytes(costs.everywhere("int8")) / 1e6)
    assert allowed[np.arange(len(choice)), choice].all()


def test_impossible_budgets_are_refused():
    table = synthetic_costs()
    with pytest.raises(EdgevitError, match="no choice of formats meets --max-drop"):
        choose(table, max_drop=table.drop_points(table.everywhere("float32")) * 0.5)
    smallest_mb = table.size_bytes(table.everywhere("w4a8")) / 1e6
    with pytest.raises(EdgevitError, match="no choice of formats fits --size-mb"):
        choose(table, size_mb=smallest_mb * 0.99)


# -- command line -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["--quant", "int8", "--max-drop", "0.5"], ["--max-drop", "needs --quant mixed"]),
    (["--quant", "w4a8", "--size-mb", "3"], ["--size-mb", "needs --quant mixed"]),
    (["--quant", "mixed"], ["needs one budget"]),
    (["--quant", "mixed", "--max-drop", "1", "--size-mb", "3"], ["not both"]),
    (["--quant", "mixed", "--max-drop", "-1"], ["must not be negative"]),
    (["--quant", "mixed", "--size-mb", "2", "--formats", "int8,float16"], ["float16", "host does not compute in float16"]),
    (["--quant", "mixed", "--size-mb", "2", "--formats", "int3"], ["unknown format 'int3'"]),
    (["--quant", "w4a8", "--w4-group", "48"], ["--w4-group must be one of", "48"]),
    (["--quant", "w4a8", "--w4-rounding", "best"], ["--w4-rounding must be one of"]),
    (["--quant", "mixed", "--max-drop", "1", "--w4-rounding", "block"], ["--w4-rounding block", "needs --quant w4a8"]),
])
def test_bad_low_bit_arguments(tmp_path, args, fragments):
    out = tmp_path / "bundle"
    args = [tiny_vit_folder() if arg == "TINY" else arg for arg in args]
    assert_one_line_error(run_module("compile", "--target", "host", *args, "--out", out), *fragments)
    assert not out.exists()
