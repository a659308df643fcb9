"""Hugging Face `transformers` ViT / DeiT image-classification folders (save_pretrained) compile by key mapping
onto timm's structure: the compiled logits equal transformers' own, labels come from id2label and the
preprocessing from preprocessor_config.json (or transformers' defaults)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compile.data import evaluation_rows
from tests.helpers import run_module

LABELS = [f"kind {i}" for i in range(10)]


def _transformers():
    """transformers, imported after timm's torchvision work-around (it imports torchvision too)."""
    from compile.model.models import import_timm

    import_timm()
    import transformers

    return transformers


def _save(folder, kind: str, **sizes):
    """A random-init classifier (`vit`; `deit`: two heads, `deit-cls`: the class token's), saved with
    save_pretrained; returns the model."""
    import torch

    tf = _transformers()
    torch.manual_seed(0)
    config_cls, model_cls = {"vit": (tf.ViTConfig, tf.ViTForImageClassification),
                             "deit": (tf.DeiTConfig, tf.DeiTForImageClassificationWithTeacher),
                             "deit-cls": (tf.DeiTConfig, tf.DeiTForImageClassification)}[kind]
    # initializer_range 0.2 instead of 0.02: logits of order 1, so a wrong mapping cannot hide below 1e-3
    config = config_cls(**{"hidden_size": 96, "num_hidden_layers": 3, "num_attention_heads": 3,
                           "intermediate_size": 384, "initializer_range": 0.2, **sizes},
                        id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)})
    model = model_cls(config).eval()
    model.save_pretrained(folder)
    return model


def _logits(model, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(batch)).logits.numpy()


def _real_image(bundle, images_dir) -> np.ndarray:
    """The first evaluation image as the bundle's manifest preprocesses it [1, 3, H, W]."""
    from tests.helpers import bundle_preprocess

    preprocess = bundle_preprocess(bundle)
    return preprocess.load(images_dir / evaluation_rows()[0][0])[None]


def test_fp32_logits_equal_transformers(tmp_path, images_dir):
    from runtime.model import Model

    folder = tmp_path / "my-vit"
    model = _save(folder, "vit")
    _transformers().ViTImageProcessor(image_mean=[0.4, 0.45, 0.5], image_std=[0.2, 0.25, 0.3],
                                      resample=3).save_pretrained(folder)
    out = tmp_path / "bundle"
    result = run_module("compile", "--weights", folder, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers vit, as timm's vit_base_patch16_224" in result.stderr
    assert (out / "labels.txt").read_text().splitlines() == LABELS
    spec = json.loads((out / "manifest.json").read_text())["input"]
    assert (spec["mean"], spec["std"], spec["crop_pct"], spec["interpolation"]) == \
        (pytest.approx([0.4, 0.45, 0.5]), pytest.approx([0.2, 0.25, 0.3]), 1.0, "bicubic")
    x = _real_image(out, images_dir)
    expected = _logits(model, x)
    got = Model(out).run_tensor(x)
    assert got.shape == (1, 10) and np.abs(expected).max() > 0.1
    assert np.abs(got - expected).max() <= 1e-3


@pytest.mark.parametrize("kind", ["deit", "deit-cls"])
def test_deit_maps_onto_timms_distilled_vit(kind, tmp_path):
    """The mapping of DeiT's class and distillation tokens and heads, checked in PyTorch (compiling a distilled
    timm ViT is tested with timm's own); preprocessing: DeiT's processor defaults (no preprocessor_config.json)."""
    import torch

    from compile.model.checkpoint import read_checkpoint
    from compile.model.models import build_model, model_spec

    model = _save(tmp_path, kind)
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint.label_names == LABELS
    spec = model_spec(checkpoint.architecture, **checkpoint.preprocessing)
    assert (spec.mean, spec.crop_pct, spec.interpolation) == ((0.485, 0.456, 0.406), 0.875, "bicubic")
    timm_model = build_model(spec, checkpoint)
    assert type(timm_model).__name__ == "VisionTransformerDistilled"
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        got = timm_model(torch.from_numpy(x)).numpy()
    assert np.abs(got - _logits(model, x)).max() <= 1e-5


@pytest.mark.slow
def test_int8_with_tome_builds_and_runs(tmp_path, images_dir):
    from runtime.bundle import read_manifest

    folder = tmp_path / "my-vit"
    _save(folder, "vit", num_hidden_layers=4)
    out = tmp_path / "bundle"
    result = run_module("compile", "--weights", folder, "--quant", "int8", "--tome-r", "8", "--calib-count", "32",
                        "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest.tome.schedule == [8, 8, 8, 8] and manifest.input.dtype == "uint8"
    image = images_dir / evaluation_rows()[0][0]
    run = run_module("runtime", "run", out, image, "--json")
    assert run.returncode == 0, run.stderr
    best = json.loads(run.stdout.strip().splitlines()[-1])[str(image)]
    assert len(best) == 5 and {entry["label"] for entry in best} <= set(LABELS)
