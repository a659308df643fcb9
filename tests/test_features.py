"""--output features: the model without its head returns timm's pooled pre-logits embedding
(`forward_head(pre_logits=True)`); `runtime run` prints its size and norm and saves it, `eval` refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compile.data import evaluation_rows
from tests.helpers import assert_one_line_error, bundle_outputs, cached_bundle, compile_timm_folder, run_module
from tests.reference import load_batch

MODEL = "deit_tiny_patch16_224"
IMAGES = 16  # evaluation images compared with PyTorch


def _pre_logits(model, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model.forward_head(model.forward_features(torch.from_numpy(batch)), pre_logits=True).numpy()


@pytest.fixture(scope="module")
def reference(images_dir):
    """(image names, PyTorch's pre-logits of DeiT-tiny with the real weights on them) [IMAGES, 192]."""
    from compile.model.models import load_model, model_spec

    names = [name for name, _ in evaluation_rows()[:IMAGES]]
    batch = load_batch(model_spec(MODEL).preprocess(), images_dir, names)
    return names, _pre_logits(load_model(MODEL), batch)


def _features_bundle(quant: str):
    return cached_bundle(f"deit_tiny-host-{quant}-features", "--target", "host", "--quant", quant, "--output", "features")


def test_fp32_features_equal_pytorch_pre_logits(reference, images_dir):
    names, expected = reference
    bundle = _features_bundle("fp32")
    manifest = json.loads((bundle / "manifest.json").read_text())["model"]
    assert (manifest["output"], manifest["num_classes"]) == ("features", 0)
    assert (bundle / "labels.txt").read_text() == ""
    got = bundle_outputs(bundle, images_dir, names)
    assert got.shape == (IMAGES, 192)
    assert np.abs(got - expected).max() <= 1e-3


def test_int8_features_point_where_pytorch_does(reference, images_dir):
    """int8 embeddings keep their direction: the cosine similarity the int8 DeiT-tiny reaches for its logits."""
    names, expected = reference
    got = bundle_outputs(_features_bundle("int8"), images_dir, names)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    print(f"int8 features: cosine with PyTorch mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    assert cosine.mean() > 0.985 and cosine.min() > 0.95


def test_run_prints_size_and_norm_and_saves_the_embeddings(reference, images_dir, tmp_path):
    names, _ = reference
    bundle = _features_bundle("fp32")
    expected = bundle_outputs(bundle, images_dir, names[:2])
    one, two = tmp_path / "one.npy", tmp_path / "two.npy"
    result = run_module("runtime", "run", bundle, images_dir / names[0], "--save", one)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{images_dir / names[0]}: embedding of 192 values, L2 norm {np.linalg.norm(expected[0]):.4f}"
    assert np.load(one).shape == (192,)
    result = run_module("runtime", "run", bundle, images_dir / names[1], images_dir / names[0], "--save", two)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(two), expected[::-1], atol=1e-5)  # in the order given
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npy", "two.npy"]  # no temp file left behind


def test_eval_needs_a_classifier(images_dir, labels_csv):
    result = run_module("runtime", "eval", _features_bundle("fp32"), "--images", images_dir, "--labels", labels_csv)
    assert result.returncode == 2
    assert_one_line_error(result, "eval needs a classifier", "--output features")


def test_labels_with_features_is_one_line(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\n")
    result = run_module("compile", "--output", "features", "--labels", tmp_path / "labels.txt", "--out", tmp_path / "b")
    assert_one_line_error(result, "--labels", "features bundle has none")


@pytest.mark.slow
def test_clip_vit_base_features_equal_pytorch(tmp_path):
    """vit_base_patch16_clip_224 (norm_pre, width 768, 12 heads) in features mode; two blocks instead of twelve
    (timm's `model_args` in the folder's config.json), which keeps the compile within a test's time."""
    from runtime.model import Model

    name = "vit_base_patch16_clip_224"
    model, bundle = compile_timm_folder(name, {"depth": 2}, tmp_path, "--output", "features")
    manifest = json.loads((bundle / "manifest.json").read_text())["model"]
    assert (manifest["name"], manifest["depth"], manifest["embed_dim"]) == (name, 2, 768)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = Model(bundle).run_tensor(x)
    expected = _pre_logits(model, x)
    assert got.shape == (1, 768) and np.abs(expected).max() > 0.1
    assert np.abs(got - expected).max() <= 1e-3


@pytest.mark.slow
def test_clip_vit_base_int8_tome_features_track_pytorch(tmp_path, images_dir):
    """The same two-block CLIP tower (norm_pre) as int8 with ToMe r=8, on real images: its embeddings point where
    PyTorch's ToMe-patched model's do."""
    import copy

    from compile.model.models import model_spec
    from compile.model.tome_patch import apply_tome

    name = "vit_base_patch16_clip_224"
    model, bundle = compile_timm_folder(name, {"depth": 2}, tmp_path, "--output", "features", "--quant", "int8",
                                        "--tome-r", "8")
    names = [row for row, _ in evaluation_rows()[:4]]
    got = bundle_outputs(bundle, images_dir, names)
    expected = _pre_logits(apply_tome(copy.deepcopy(model), [8, 8]),
                           load_batch(model_spec(name).preprocess(), images_dir, names))
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    print(f"int8 + ToMe CLIP features: cosine with PyTorch {np.round(cosine, 4)}")
    assert got.shape == (4, 768) and cosine.min() >= 0.98
