"""Integer PTQ: the Relax graph really runs int8 x int8 -> int32 matmuls, int8-full is integer only and
bit-exact against a numpy reference, ToMe matching agrees with compile.model.tome, recipe choices reach the
manifest, and bad calibration input gets one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tvm import relax

from compile.model.models import load_model, model_spec
from runtime.evaluate import read_labels
from targets import load_preset
from tests.helpers import assert_one_line_error, quantized_graph, run_module

MODEL = "deit_tiny_patch16_224"


@pytest.fixture(scope="module")
def model(data):
    return load_model(MODEL)


def small_graph(model, mode: str, r: int = 0, **recipe):
    """(host graph, QuantizedViT) calibrated on 16 real images (enough for structure and exactness tests)."""
    return quantized_graph(model, model_spec(MODEL), mode, r, **recipe)


def main_calls(mod) -> list[tuple[str, list, object]]:
    """(callee name, argument types, result type) of every call_tir in main, in order."""
    calls = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
                calls.append((value.args[0].name_hint, [a.ty for a in value.args[1].fields], binding.var.ty))
    return calls


def main_bindings(mod) -> list[relax.Binding]:
    return [binding for block in mod["main"].body.blocks for binding in block.bindings]


def test_int8_graph_runs_its_matmuls_on_integers(model):
    mod, _ = small_graph(model, "int8")
    matmuls = [call for call in main_calls(mod) if call[0].startswith("int8_")]
    dense = [c for c in matmuls if c[0].startswith("int8_dense")]
    batch = [c for c in matmuls if c[0].startswith("int8_batch_matmul")]
    depth = len(model.blocks)
    # patch embedding + qkv, proj, fc1, fc2 per block + head; q @ k^T and probs @ v per block
    assert len(dense) == 1 + 4 * depth + 1 and len(batch) == 2 * depth
    for name, args, result in matmuls:
        assert args[0].dtype in ("int8", "uint8") and str(result.dtype) == "int32", (name, args, result)
    assert dense[0][1][0].dtype == "uint8"  # pixels go in as they are
    assert all(c[1][0].dtype == "uint8" for c in batch[1::2])  # attention probabilities
    float_matmuls = [b for b in main_bindings(mod) if isinstance(b.value, relax.Call)
                     and getattr(b.value.op, "name", "") == "relax.matmul" and b.var.ty.dtype == "float32"]
    assert not float_matmuls


def test_int8_full_graph_is_integer_only(model):
    mod, _ = small_graph(model, "int8-full", r=4)
    bindings = main_bindings(mod)
    first_float = next(i for i, b in enumerate(bindings) if str(getattr(b.var.ty, "dtype", "")).startswith("float"))
    last_matmul = max(i for i, b in enumerate(bindings) if isinstance(b.value, relax.Call)
                      and getattr(b.value.op, "name", "") == "relax.call_tir"
                      and b.value.args[0].name_hint.startswith("int8_dense"))
    # the only float values are the logits after the last (head) matmul: acc * scale
    assert first_float > last_matmul
    assert mod["main"].params[0].ty.dtype == "uint8"


@pytest.mark.parametrize("r, groups", [(0, 1), (8, 2)])
def test_int8_full_equals_numpy_reference_bit_exactly(model, images_dir, labels_csv, r, groups):
    import tvm

    from tests import integer_reference
    from tests.helpers import lower_for_cpu

    mod, qvit = small_graph(model, "int8-full", r=r, fc2_groups=groups)
    assert len(qvit.blocks[0].fc2.segments) == groups
    target = load_preset("host").target()
    vm = relax.VirtualMachine(relax.build(lower_for_cpu(mod, target), target=target), tvm.cpu())
    spec = model_spec(MODEL)
    preprocess = spec.preprocess("uint8")
    for name, _ in read_labels(labels_csv, skip=256, limit=3):
        pixels = preprocess.load(images_dir / name)[None]
        compiled = vm["main"](tvm.runtime.tensor(pixels)).numpy()
        expected = integer_reference.run(qvit, pixels)
        assert compiled.dtype == expected.dtype == np.float32
        assert np.array_equal(compiled, expected), (name, float(np.abs(compiled - expected).max()))


def test_integer_tome_matching_agrees_with_compile_tome(model, images_dir, labels_csv):
    """The integer graph's matching (int8 unit keys, integer scores) merges the tokens compile.model.tome merges,
    into the rows compile.model.tome puts them."""
    import tvm

    from compile.graph.builder import Emitter
    from compile.graph.tome import match_tokens
    from compile.model.tome import bipartite_soft_matching
    from tests.helpers import lower_for_cpu

    spec = model_spec(MODEL)
    preprocess = spec.preprocess()
    keys = {}

    def keep_keys(module, args, out) -> None:
        keys["k"] = out[0, :, 192:384]

    hook = model.blocks[3].attn.qkv.register_forward_hook(keep_keys)
    rows = read_labels(labels_csv, skip=256, limit=2)
    tokens, heads, r = 197, 3, 16
    target = load_preset("host").target()
    bb = relax.BlockBuilder()
    em = Emitter(bb, target)
    qkv_var = relax.Var("qkv", relax.TensorType((tokens, 3 * heads * 64), "int8"))
    with bb.function("main", [qkv_var]):
        with bb.dataflow():
            out = bb.emit_output(match_tokens(em, qkv_var, heads, r, 1))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(relax.build(lower_for_cpu(bb.get(), target), target=target), tvm.cpu())
    try:
        for name, _ in rows:
            keys.clear()
            with torch.inference_mode():
                model(torch.from_numpy(preprocess.load(images_dir / name)[None]))
            k = keys["k"].reshape(tokens, heads, 64).permute(1, 0, 2)
            k8 = torch.clamp(torch.round(k / (k.abs().max() / 127)), -127, 127).to(torch.int8)
            merge = bipartite_soft_matching(k8.float().mean(0)[None], r, protected=1)
            expected = merge(torch.eye(tokens)[None])[0].numpy()
            qkv = np.zeros((tokens, 3 * heads * 64), np.int8)
            qkv[:, heads * 64:2 * heads * 64] = k8.permute(1, 0, 2).reshape(tokens, heads * 64).numpy()
            dest = vm["main"](tvm.runtime.tensor(qkv)).numpy()  # output row of each token
            got = {frozenset(np.nonzero(dest == row)[0]) for row in range(tokens - r)}
            expected_groups = {frozenset(np.nonzero(sources)[0]) for sources in expected}
            same = len(got & expected_groups) / len(expected_groups)
            print(f"{name}: {same:.1%} of the merged token groups identical")
            # scores differ by the int8 rounding of the unit keys, so a near-tie may pick another token;
            # anything else (sort order, protection, destinations) would change most groups. The row
            # layout itself is checked bit-exactly against the numpy reference (which follows compile.model.tome).
            assert sorted(set(dest.tolist())) == list(range(tokens - r)) and dest[0] == 0 and same >= 0.9, name
    finally:
        hook.remove()


def test_keep_float_keeps_the_most_sensitive_layers(model):
    mod, qvit = small_graph(model, "int8", keep_float=2)
    ranked = sorted(qvit.linears(), key=lambda layer: layer.rel_error, reverse=True)
    float_matmuls = [b for b in main_bindings(mod) if isinstance(b.value, relax.Call)
                     and getattr(b.value.op, "name", "") == "relax.matmul" and b.var.ty.dtype == "float32"]
    weights = [b.value.args[1].value.numpy() for b in float_matmuls]  # the float GEMMs' weight constants
    described = {linear.name: linear.weight for linear in qvit.vit.linears()}
    assert len(weights) == 2
    for layer in ranked[:2]:  # the two layers with the largest int8 error run on their description's weights
        assert any(np.array_equal(described[layer.name], weight) for weight in weights), layer.name


def test_recipe_and_layer_choices_in_manifest(tmp_path):
    out = tmp_path / "bundle"
    result = run_module("compile", "--target", "host", "--quant", "int8", "--calib-count", "8", "--keep-float", "1",
                        "--fc2-groups", "2", "--observer", "percentile", "--out", out, timeout_s=900)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["dtype"] == "uint8"
    quant = manifest["quant"]
    assert quant["mode"] == "int8" and quant["recipe"]["observer"] == "percentile" and quant["recipe"]["calib_count"] == 8
    layers = quant["layers"]
    assert sum(layer["format"] == "float32" for layer in layers.values()) == 1
    worst = max(layers, key=lambda name: layers[name]["rel_error"])
    assert layers[worst]["format"] == "float32"
    assert len(layers["blocks.0.fc2"]["groups"]) == 2 and layers["blocks.0.qkv"]["input_scales"] == "per-channel"
    assert_top1_agrees_with_pytorch(out, load_model(MODEL))


def assert_top1_agrees_with_pytorch(bundle, model, images: int = 8) -> None:
    """The bundle's top-1 (runtime run) is PyTorch's on the evaluation images PyTorch itself is sure of (p > 0.5)."""
    from compile.data import labelled_images
    from tests.reference import load_batch

    names = [name for name, _ in read_labels(labelled_images() / "labels.csv", skip=256, limit=images)]
    folder = labelled_images() / "images"
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(load_batch(model_spec(MODEL).preprocess(), folder, names))), 1)
    ran = run_module("runtime", "run", bundle, *(folder / name for name in names), "--json")
    assert ran.returncode == 0, ran.stderr[-2000:]
    tops = [top[0] for top in json.loads(ran.stdout.strip().splitlines()[-1]).values()]
    sure = [(top, p) for top, p in zip(tops, probs.numpy()) if p.max() > 0.5]
    assert len(sure) >= images // 2
    assert [top["class"] for top, _ in sure] == [p.argmax() for _, p in sure]


# -- bad calibration input ----------------------------------------------------------------------------

def _compile_int8(*args, env=None):
    return run_module("compile", "--target", "host", "--quant", "int8", *args, env=env, timeout_s=900)


def test_missing_calibration_folder(tmp_path):
    assert_one_line_error(_compile_int8("--calib-images", tmp_path / "nope"), "calibration folder not found")


def test_empty_calibration_folder(tmp_path):
    assert_one_line_error(_compile_int8("--calib-images", tmp_path), "has no images")


def test_too_few_calibration_images(tmp_path, images_dir):
    for name in sorted(p.name for p in images_dir.iterdir())[:3]:
        (tmp_path / name).write_bytes((images_dir / name).read_bytes())
    assert_one_line_error(_compile_int8("--calib-images", tmp_path), "has 3 images", "at least 8")


def test_unreadable_calibration_image(tmp_path, images_dir):
    for name in sorted(p.name for p in images_dir.iterdir())[:8]:
        (tmp_path / name).write_bytes((images_dir / name).read_bytes())
    (tmp_path / "zz_broken.jpg").write_text("not a jpeg\n")
    assert_one_line_error(_compile_int8("--calib-images", tmp_path), "cannot read image", "zz_broken.jpg")


@pytest.mark.parametrize("args, fragment", [
    (["--calib-count", "300"], "default calibration split has 256"),
    (["--calib-count", "4"], "at least 8"),
    (["--observer", "kl"], "unknown observer 'kl'"),
    (["--quant", "int4"], "unknown quantization mode 'int4'"),
    (["--quant", "int8-full", "--keep-float", "2"], "integer only"),
])
def test_bad_quantization_arguments(args, fragment):
    assert_one_line_error(run_module("compile", "--target", "host", "--quant", "int8", *args), fragment)


@pytest.mark.parametrize("mode", ["int8", "int8-full"])
def test_degenerate_layer_gets_a_message_not_nans(data, tmp_path, mode):
    """fc1 of block 3 zeroed: fc2's input is exactly 0 on every image (GELU(0) = 0)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(data / f"{MODEL}.safetensors"))
    weights["blocks.3.mlp.fc1.weight"].zero_()
    weights["blocks.3.mlp.fc1.bias"].zero_()
    path = tmp_path / "zeroed.safetensors"
    save_file(weights, str(path))
    out = tmp_path / "bundle"
    result = run_module("compile", "--target", "host", "--quant", mode, "--weights", path, "--calib-count", "8",
                        "--out", out, timeout_s=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "blocks.3.fc2_in is all zeros" in result.stderr
    assert_top1_agrees_with_pytorch(out, load_model(MODEL, path))
