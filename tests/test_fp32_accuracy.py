"""The compiled FP32 host bundles agree with PyTorch on the real weights and real images: fp32 with PyTorch, fp32 +
ToMe r=8 (the graph's own ToMe kernels) with PyTorch's ToMe r=8 on the evaluation split."""

import json

import numpy as np
import pytest

from compile.model.models import load_model
from runtime.evaluate import read_labels
from runtime.model import Model
from tests.helpers import bundle_preprocess, run_module
from tests.reference import load_batch, topk_hits, torch_logits


@pytest.mark.slow
def test_host_fp32_top1_equals_pytorch_on_1300_images(host_bundle, images_dir, labels_csv):
    rows = read_labels(labels_csv)
    result = run_module("runtime", "eval", host_bundle, "--images", images_dir, "--labels", labels_csv, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    compiled = json.loads(result.stdout.strip().splitlines()[-1])
    assert compiled["n"] == len(rows) == 1300

    preprocess = bundle_preprocess(host_bundle)
    batch = load_batch(preprocess, images_dir, [name for name, _ in rows])
    labels = np.array([label for _, label in rows])
    logits = torch_logits(load_model("deit_tiny_patch16_224"), batch)
    torch_top1 = topk_hits(logits, labels, 1) / len(rows)
    print(f"top-1 PyTorch {torch_top1:.4f}, compiled {compiled['top1']:.4f}; top-5 compiled {compiled['top5']:.4f}")
    assert 0.80 < torch_top1 < 0.83  # the data README measured 81.54% for these weights and images
    assert abs(compiled["top1"] - torch_top1) <= 0.001


def test_host_fp32_logits_match_pytorch(host_bundle, images_dir, labels_csv):
    rows = read_labels(labels_csv, limit=16)
    model = Model(host_bundle)
    preprocess = bundle_preprocess(host_bundle)
    batch = load_batch(preprocess, images_dir, [name for name, _ in rows])
    expected = torch_logits(load_model("deit_tiny_patch16_224"), batch)
    got = np.concatenate([model.run_tensor(image) for image in batch])
    diff = float(np.abs(got - expected).max())
    print(f"max |logit diff| over {len(rows)} images: {diff:.2e}")
    assert diff <= 1e-3


@pytest.mark.slow
def test_host_fp32_tome_top1_within_0_3_of_pytorch_tome(images_dir, labels_csv):
    from compile.data import CALIBRATION_ROWS
    from compile.model.tome_patch import apply_tome
    from tests.helpers import cached_bundle

    bundle = cached_bundle("deit_tiny-host-fp32-tome8", "--target", "host", "--tome-r", "8")
    rows = read_labels(labels_csv, skip=CALIBRATION_ROWS)
    result = run_module("runtime", "eval", bundle, "--images", images_dir, "--labels", labels_csv,
                        "--skip", str(CALIBRATION_ROWS), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    compiled = json.loads(result.stdout.strip().splitlines()[-1])
    assert compiled["n"] == len(rows)
    preprocess = bundle_preprocess(bundle)
    batch = load_batch(preprocess, images_dir, [name for name, _ in rows])
    model = apply_tome(load_model("deit_tiny_patch16_224"), [8] * 12)
    torch_top1 = topk_hits(torch_logits(model, batch), np.array([label for _, label in rows]), 1) / len(rows)
    print(f"ToMe r=8 top-1 on {len(rows)} images: PyTorch {torch_top1:.4f}, compiled {compiled['top1']:.4f}")
    assert abs(compiled["top1"] - torch_top1) <= 0.003
