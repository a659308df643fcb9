"""Models by structure, not by name: timm ViTs of several families (LayerScale, registers, patch 32,
384 px, DINOv2 at 224 px, CLIP's norm_pre, average pooling) compile from a checkpoint of random weights
and match PyTorch (fp32 through the one graph; DINOv2 with ToMe against PyTorch's ToMe); what is not a standard
ViT is refused with one line naming the part."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import assert_one_line_error, compile_timm_folder, run_module

CASES = {  # model -> extra compile flags
    "deit3_small_patch16_224": (),  # LayerScale, position embedding without the class token
    "vit_small_patch32_224": (),  # patch 32
    "vit_tiny_patch16_384": (),  # 384 px: 577 tokens
    "vit_small_patch14_reg4_dinov2": ("--image-size", "224"),  # patch 14, 4 registers, LayerScale
    "vit_xsmall_patch16_clip_224": (),  # CLIP image tower: norm_pre
    "vit_wee_patch16_reg1_gap_256": (),  # average pooling, a register, fc_norm
}


def _random_checkpoint(name: str, image_size: int | None, path) -> object:
    """A randomly initialised model with a 10-class head, saved as a PyTorch state dict; returns the model."""
    import torch

    from compile.model.models import import_timm

    torch.manual_seed(0)
    size = {} if image_size is None else {"img_size": image_size}
    model = import_timm().create_model(name, pretrained=False, num_classes=10, **size).eval()
    torch.save(model.state_dict(), path)
    return model


def _compile_and_compare(name: str, flags: tuple[str, ...], tmp_path, *extra: str) -> None:
    import torch

    from runtime.model import Model

    image_size = int(flags[flags.index("--image-size") + 1]) if "--image-size" in flags else None
    model = _random_checkpoint(name, image_size, tmp_path / "weights.pth")
    out = tmp_path / "bundle"
    result = run_module("compile", "--model", name, "--weights", tmp_path / "weights.pth", *flags, *extra, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    session = Model(out)
    size = session.input_shape[-1]
    assert size == model.patch_embed.img_size[0]
    x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    got = session.run_tensor(x)
    if "--tome-r" in extra:  # the compiled ToMe against PyTorch's ToMe on the same model
        from compile.model.tome_patch import apply_tome

        apply_tome(model, [int(extra[extra.index("--tome-r") + 1])] * len(model.blocks))
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - expected).max() <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_fp32_matches_pytorch(name, tmp_path):
    _compile_and_compare(name, CASES[name], tmp_path)


@pytest.mark.slow
def test_tome_with_registers_and_layerscale_matches_pytorch_tome(tmp_path):
    """DINOv2 (4 registers never merged, LayerScale) with ToMe r=8 in fp32: PyTorch's ToMe within 1e-3."""
    _compile_and_compare("vit_small_patch14_reg4_dinov2", CASES["vit_small_patch14_reg4_dinov2"], tmp_path,
                         "--tome-r", "8")


@pytest.mark.slow
def test_quick_gelu_clip_tower_matches_pytorch(tmp_path):
    """QuickGELU (x * sigmoid(1.702 x), OpenAI CLIP's activation) in a two-block CLIP image tower."""
    import torch

    from runtime.model import Model

    model, bundle = compile_timm_folder("vit_xsmall_patch16_clip_224", {"depth": 2, "act_layer": "quick_gelu",
                                                                       "num_classes": 10}, tmp_path)
    assert type(model.blocks[0].mlp.act).__name__ == "QuickGELU"
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(Model(bundle).run_tensor(x) - expected).max() <= 1e-3


@pytest.mark.parametrize("name, part", [
    ("resnet50", "ResNet is not a ViT"),
    ("swin_tiny_patch4_window7_224", "SwinTransformer is not a ViT"),
    ("beit_base_patch16_224", "Beit is not a ViT"),
    ("eva02_tiny_patch14_224", "Eva is not a ViT"),
])
def test_what_is_not_a_standard_vit_is_refused(name, part):
    assert_one_line_error(run_module("compile", "--model", name, "--random-init"), f"model {name} is not supported", part)


@pytest.mark.slow
def test_int8_layerscale_agrees_with_pytorch(tmp_path, data, images_dir):
    """LayerScale in the integer graph (folded into proj / fc2): DeiT-tiny's real weights with per-channel gammas
    from [0.5, 2] on every branch and proj / fc2 divided by them, the same function as the trained model: an
    int8 build that dropped or misplaced gamma would not agree with it."""
    import torch
    from safetensors.torch import load_file

    from compile.data import evaluation_rows
    from compile.model.models import model_spec
    from tests.helpers import bundle_outputs
    from tests.reference import load_batch, torch_logits

    def with_layer_scale(model) -> None:
        missing = model.load_state_dict(load_file(str(data / "deit_tiny_patch16_224.safetensors")), strict=False)
        assert all(key.endswith(".gamma") for key in missing.missing_keys) and not missing.unexpected_keys
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for block in model.blocks:
                for layer_scale, linear in ((block.ls1, block.attn.proj), (block.ls2, block.mlp.fc2)):
                    gamma = torch.empty(model.embed_dim).uniform_(0.5, 2.0, generator=generator)
                    layer_scale.gamma.copy_(gamma)
                    linear.weight.div_(gamma[:, None])
                    linear.bias.div_(gamma)

    model, bundle = compile_timm_folder("deit_tiny_patch16_224", {"init_values": 1.0}, tmp_path, "--quant", "int8",
                                        prepare=with_layer_scale)
    names = [name for name, _ in evaluation_rows()[:100]]
    expected = torch_logits(model, load_batch(model_spec("deit_tiny_patch16_224").preprocess(), images_dir, names))
    agreement = float((bundle_outputs(bundle, images_dir, names).argmax(1) == expected.argmax(1)).mean())
    print(f"int8 with LayerScale: top-1 agreement with PyTorch {agreement:.3f} over {len(names)} images")
    assert agreement >= 0.95


def _integer_runs(model, spec, mode: str, r: int, images_dir, names: list[str]):
    """(compiled outputs [n, classes] of `model` quantized in `mode` with ToMe r, its QuantizedViT, the pixels
    it ran on), calibrated on 16 real images and built for the host in this process."""
    import tvm
    from tvm import relax

    from targets import load_preset
    from tests.helpers import lower_for_cpu, quantized_graph

    mod, qvit = quantized_graph(model, spec, mode, r)
    target = load_preset("host").target()
    vm = relax.VirtualMachine(relax.build(lower_for_cpu(mod, target), target=target), tvm.cpu())
    pixels = [spec.preprocess("uint8").load(images_dir / name)[None] for name in names]
    return np.concatenate([vm["main"](tvm.runtime.tensor(p)).numpy() for p in pixels]), qvit, pixels


def _assert_int8_full_is_the_reference(model, spec, images_dir, names: list[str], r: int) -> np.ndarray:
    from tests import integer_reference

    compiled, qvit, pixels = _integer_runs(model, spec, "int8-full", r, images_dir, names)
    for got, image in zip(compiled, pixels):
        assert np.array_equal(got[None], integer_reference.run(qvit, image))
    return compiled


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_integer_graph_builds_each_family(name, images_dir, labels_csv):
    """Two-block random-init models of each family: int8 runs and tracks PyTorch, int8-full with ToMe r=4 equals
    the numpy reference of the integer graph bit for bit."""
    import torch

    from compile.model.models import import_timm, model_spec
    from runtime.evaluate import read_labels

    flags = CASES[name]
    image_size = int(flags[flags.index("--image-size") + 1]) if "--image-size" in flags else None
    torch.manual_seed(0)
    size = {} if image_size is None else {"img_size": image_size}
    model = import_timm().create_model(name, pretrained=False, num_classes=10, depth=2, **size).eval()
    spec = model_spec(name, image_size=image_size)
    names = [row for row, _ in read_labels(labels_csv, skip=256, limit=2)]
    compiled, _, _ = _integer_runs(model, spec, "int8", 0, images_dir, names)
    with torch.inference_mode():
        expected = model(torch.from_numpy(np.stack([spec.preprocess().load(images_dir / n) for n in names]))).numpy()
    assert np.corrcoef(compiled.ravel(), expected.ravel())[0, 1] >= 0.99
    assert np.isfinite(_assert_int8_full_is_the_reference(model, spec, images_dir, names, r=4)).all()


def _every_part_model(data):
    """DeiT-tiny's first four blocks, real weights, rebuilt with every part the integer graph handles beyond DeiT:
    position embedding without the class token (the class token takes its row of DeiT's), two register
    tokens, norm_pre, q/k norm, LayerScale, QuickGELU, average pooling into fc_norm. The new norms get gammas from
    [0.5, 3]: real magnitudes, so a part dropped or misplaced in the integer graph changes the logits."""
    import torch
    from safetensors.torch import load_file

    from compile.model.models import import_timm

    torch.manual_seed(0)
    model = import_timm().create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=4, num_classes=10, reg_tokens=2, no_embed_class=True,
        pre_norm=True, global_pool="avg", fc_norm=True, qk_norm=True, act_layer="quick_gelu", init_values=0.5).eval()
    weights = {key: value for key, value in load_file(str(data / "deit_tiny_patch16_224.safetensors")).items()
               if not key.startswith("head") and not (key.startswith("blocks.") and int(key.split(".")[1]) >= 4)}
    pos = weights.pop("pos_embed")
    weights.update(pos_embed=pos[:, 1:], cls_token=weights["cls_token"] + pos[:, :1],
                   **{"fc_norm.weight": weights.pop("norm.weight"), "fc_norm.bias": weights.pop("norm.bias")})
    model.load_state_dict(weights, strict=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for norm in [model.norm_pre] + [n for b in model.blocks for n in (b.attn.q_norm, b.attn.k_norm)]:
            norm.weight.uniform_(0.5, 3.0, generator=generator)
            norm.bias.uniform_(-0.2, 0.2, generator=generator)
    return model


@pytest.mark.slow
def test_integer_graph_with_every_part_tracks_pytorch(data, images_dir, labels_csv):
    import torch

    from compile.model.models import model_spec
    from runtime.evaluate import read_labels

    model = _every_part_model(data)
    spec = model_spec("vit_tiny_patch16_224")
    names = [row for row, _ in read_labels(labels_csv, skip=256, limit=4)]
    with torch.inference_mode():
        expected = model(torch.from_numpy(np.stack([spec.preprocess().load(images_dir / n) for n in names]))).numpy()
    int8, _, _ = _integer_runs(model, spec, "int8", 0, images_dir, names)
    full = _assert_int8_full_is_the_reference(model, spec, images_dir, names, r=0)
    for mode, compiled in (("int8", int8), ("int8-full", full)):
        correlation = [np.corrcoef(got, want)[0, 1] for got, want in zip(compiled, expected)]
        print(f"{mode}: logit correlation with PyTorch {np.round(correlation, 4)}")
        assert min(correlation) >= 0.99, mode
    _assert_int8_full_is_the_reference(model, spec, images_dir, names[:2], r=8)


def test_integer_quick_gelu_is_quick_gelu():
    """int8-full's QuickGELU (as the numpy reference the graph equals computes it) is x * sigmoid(1.702 x), 30x
    closer to it than erf-GELU is (the two functions differ by at most 0.02)."""
    import math

    from compile.quant import integer_params as P
    from tests.integer_reference import quick_gelu

    x = np.linspace(-8, 8, 4001)
    g = np.round(x * 2**P.GELU_FRAC).astype(np.int64)
    exact_quick = x / (1 + np.exp(-1.702 * x))
    exact_gelu = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    gap = np.abs(exact_quick - exact_gelu).max()
    assert np.abs(quick_gelu(g) / 2**P.GELU_FRAC - exact_quick).max() < gap / 30


def test_int8_names_what_the_integer_graph_lacks(tmp_path):
    """Average pooling after a final norm (fc_norm off) is the one standard-ViT head the integer graph refuses."""
    from compile.model.models import import_timm

    timm = import_timm()
    from timm.models import _hub

    args = {"depth": 1, "global_pool": "avg", "fc_norm": False, "num_classes": 10}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **args)
    _hub.save_for_hf(model, str(tmp_path / "weights"), model_args=args, safe_serialization=True)
    result = run_module("compile", "--weights", tmp_path / "weights", "--quant", "int8", "--out", tmp_path / "b")
    assert_one_line_error(result, "--quant int8", "the integer graph does not handle its final norm before average "
                          "pooling", "--quant fp32")


def test_fp32_averages_normed_rows(tmp_path):
    """Average pooling after a final norm (timm's fc_norm=False: the mean of the normed rows), which the integer
    graph refuses, in fp32 through the one graph: PyTorch within 1e-3."""
    import torch

    from runtime.model import Model

    args = {"depth": 1, "global_pool": "avg", "fc_norm": False, "num_classes": 10}
    model, bundle = compile_timm_folder("vit_tiny_patch16_224", args, tmp_path)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(Model(bundle).run_tensor(x) - expected).max() <= 1e-3


def test_preprocessing_follows_timm_and_the_flags():
    from compile.model.models import model_spec

    clip = model_spec("vit_base_patch16_clip_224")
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073)) and clip.crop_pct == pytest.approx(0.95)
    dino = model_spec("vit_small_patch14_reg4_dinov2", image_size=224, crop_pct=0.875, mean=None)
    assert (dino.image_size, dino.crop_pct, dino.mean) == (224, 0.875, pytest.approx((0.485, 0.456, 0.406)))
    assert model_spec("vit_tiny_patch16_384").input_spec().shape == [1, 3, 384, 384]


@pytest.mark.parametrize("flags, message", [
    (("--crop-pct", "1.5"), "0 < crop_pct <= 1"),
    (("--image-size", "4"), "size >= 8"),
])
def test_bad_preprocessing_flags_are_one_line(flags, message):
    assert_one_line_error(run_module("compile", "--random-init", *flags), message)


def test_a_mean_of_two_values_is_a_usage_error():
    result = run_module("compile", "--random-init", "--mean", "0.5,0.5")
    assert result.returncode == 2 and "three comma-separated numbers" in result.stderr.splitlines()[-1]


@pytest.mark.slow
def test_every_part_builds_for_an_arm_board(tmp_path):
    """The integer graph's new parts (registers, position embedding without the class token, norm_pre, q/k norm,
    QuickGELU, average pooling) cross compile for rpi5 in int8-full with ToMe."""
    import json

    args = {"depth": 2, "num_classes": 10, "reg_tokens": 2, "no_embed_class": True, "pre_norm": True,
            "global_pool": "avg", "fc_norm": True, "qk_norm": True, "act_layer": "quick_gelu", "init_values": 0.5}
    _, bundle = compile_timm_folder("vit_tiny_patch16_224", args, tmp_path, "--target", "rpi5", "--quant", "int8-full",
                                    "--tome-r", "4", "--calib-count", "16")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"]["arch"] == "aarch64" and manifest["quant"]["mode"] == "int8-full"
