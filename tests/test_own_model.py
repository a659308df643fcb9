"""Your own fine-tuned ViT: a 10-class DeiT-tiny made here from the real weights (the head cut to 10
ImageNet classes), saved as a timm training checkpoint (raw and EMA weights, DataParallel prefixes),
compiled with a labels file to fp32 and int8 and compared with PyTorch on the shared images."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from compile.data import evaluation_rows
from tests.cache import edgevit_cache_dir
from tests.helpers import assert_one_line_error, bundle_outputs, cached_bundle, run_module
from tests.reference import load_batch, torch_logits

MODEL = "deit_tiny_patch16_224"
CLASSES = 10


def _classes_and_rows() -> tuple[list[int], list[tuple[str, int]]]:
    """The 10 ImageNet classes most frequent in the evaluation split, and the split's images of them: what a
    10-class model is for (on images of other classes its 10 logits are near ties, and any rounding flips them)."""
    rows = evaluation_rows()
    classes = sorted(c for c, _ in collections.Counter(label for _, label in rows).most_common(CLASSES))
    return classes, [(name, label) for name, label in rows if label in classes]


@pytest.fixture(scope="module")
def checkpoint(data):
    """(training checkpoint .pth.tar, labels file, the EMA state dict as PyTorch's reference uses it)."""
    import torch
    from safetensors.torch import load_file

    classes, _ = _classes_and_rows()
    ema = load_file(str(data / f"{MODEL}.safetensors"))
    ema["head.weight"], ema["head.bias"] = ema["head.weight"][classes].clone(), ema["head.bias"][classes].clone()
    raw = {name: tensor.clone() for name, tensor in ema.items()}
    raw["head.weight"].zero_()  # a build that took the raw weights over the EMA ones would predict nonsense
    directory = edgevit_cache_dir() / "own_model"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "deit_tiny_10class.pth.tar"
    torch.save({"epoch": 30, "arch": MODEL, "state_dict": {f"module.{k}": v for k, v in raw.items()},
                "state_dict_ema": {f"module.{k}": v for k, v in ema.items()}, "optimizer": {}}, path)
    names = (data / "imagenet_classes.txt").read_text().splitlines()
    labels = directory / "labels.txt"
    labels.write_text("".join(f"{names[c]}\n" for c in classes))
    return path, labels, ema


@pytest.fixture(scope="module")
def reference(checkpoint, data):
    """(image folder, names, PyTorch's logits of the 10-class model on them with the runtime's preprocessing)."""
    from compile.model.models import import_timm, model_spec

    _, _, ema = checkpoint
    model = import_timm().create_model(MODEL, num_classes=CLASSES).eval()
    model.load_state_dict(ema)
    _, rows = _classes_and_rows()
    images = data / "imagenet_val_1300" / "images"
    names = [name for name, _ in rows]
    return images, names, torch_logits(model, load_batch(model_spec(MODEL).preprocess(), images, names))


def _compiled_logits(bundle, images, names, dtype: str) -> np.ndarray:
    from runtime.bundle import read_manifest

    assert read_manifest(bundle).input.dtype == dtype
    return bundle_outputs(bundle, images, names)


def _bundle(checkpoint, quant: str):
    path, labels, _ = checkpoint
    return cached_bundle(f"own-10class-{quant}", "--target", "host", "--model", MODEL, "--weights", path,
                         "--labels", labels, "--quant", quant)


def test_fp32_predictions_equal_pytorch(checkpoint, reference):
    images, names, torch_out = reference
    compiled = _compiled_logits(_bundle(checkpoint, "fp32"), images, names, "float32")
    assert compiled.shape == (len(names), CLASSES) and len(names) >= 40
    assert np.abs(compiled - torch_out).max() <= 1e-3
    assert (compiled.argmax(1) == torch_out.argmax(1)).all()


def test_int8_agrees_with_pytorch(checkpoint, reference):
    images, names, torch_out = reference
    compiled = _compiled_logits(_bundle(checkpoint, "int8"), images, names, "uint8")
    agreement = float((compiled.argmax(1) == torch_out.argmax(1)).mean())
    print(f"int8 top-1 agreement with PyTorch: {agreement:.3f} over {len(names)} images")
    assert agreement >= 0.98


def test_run_prints_the_names_of_the_labels_file(checkpoint, reference, data):
    _, labels, _ = checkpoint
    bundle = _bundle(checkpoint, "fp32")
    images, names, torch_out = reference
    assert (bundle / "labels.txt").read_text() == labels.read_text()
    result = run_module("runtime", "run", bundle, images / names[0])
    assert result.returncode == 0, result.stderr
    best = labels.read_text().splitlines()[int(torch_out[0].argmax())]
    assert result.stdout.splitlines()[1].strip().startswith(f"1. {best} (")


def _class_tree(root, labels, rows, images):
    """An image-folder layout: <root>/<label name>/<file> (links to the shared images) for each row."""
    classes, _ = _classes_and_rows()
    names = labels.read_text().splitlines()
    for file, label in rows:
        folder = root / names[classes.index(label)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / file).symlink_to(images / file)
    return root


def test_eval_reads_an_image_folder_layout(checkpoint, reference, tmp_path):
    import json

    _, labels, _ = checkpoint
    images, names, torch_out = reference
    _, rows = _classes_and_rows()
    tree = _class_tree(tmp_path / "mine", labels, rows, images)
    (tree / "notes.txt").write_text("not an image, not a folder: ignored")
    result = run_module("runtime", "eval", _bundle(checkpoint, "fp32"), "--images", tree, "--json")
    assert result.returncode == 0, result.stderr
    classes, _ = _classes_and_rows()
    truth = np.array([classes.index(label) for _, label in rows])
    expected = float((torch_out.argmax(1) == truth).mean())  # torch_out's rows follow the same images
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == len(rows) and summary["top1"] == pytest.approx(expected)


def test_an_image_folder_of_an_unknown_class_is_one_line(checkpoint, reference, tmp_path):
    _, labels, _ = checkpoint
    images, _, _ = reference
    _, rows = _classes_and_rows()
    tree = _class_tree(tmp_path / "mine", labels, rows[:2], images)
    (tree / "platypus").mkdir()
    result = run_module("runtime", "eval", _bundle(checkpoint, "fp32"), "--images", tree)
    assert result.returncode == 2
    assert_one_line_error(result, "'platypus'", "labels.txt")


def test_a_labels_file_of_another_count_is_refused(checkpoint, tmp_path):
    path, _, _ = checkpoint
    short = tmp_path / "labels.txt"
    short.write_text("cat\ndog\n")
    result = run_module("compile", "--model", MODEL, "--weights", path, "--labels", short, "--out", tmp_path / "b")
    assert_one_line_error(result, "names 2 classes", "head has 10")
    assert not (tmp_path / "b").exists()


def test_a_checkpoint_that_needs_unpickling_is_refused_not_run(tmp_path):
    import torch

    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _Payload(str(marker))}, path)
    result = run_module("compile", "--model", MODEL, "--weights", path, "--out", tmp_path / "b")
    assert_one_line_error(result, "refused", "arbitrary unpickling")
    assert not marker.exists()


def test_missing_keys_are_named(checkpoint, tmp_path):
    import torch

    _, _, ema = checkpoint
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in ema.items() if not k.startswith("blocks.11.")}, path)
    result = run_module("compile", "--model", MODEL, "--weights", path, "--out", tmp_path / "b")
    assert_one_line_error(result, "do not fit", "missing keys blocks.11.")


class _Payload:
    """Unpickling this runs `touch marker`: what weights_only loading must refuse to do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))



def test_a_timm_hugging_face_folder_names_its_model_and_labels(checkpoint, reference, tmp_path):
    from timm.models import _hub

    from compile.model.models import import_timm

    _, labels, ema = checkpoint
    model = import_timm().create_model(MODEL, num_classes=CLASSES).eval()
    model.load_state_dict(ema)
    folder = tmp_path / "my-vit"
    names = labels.read_text().splitlines()
    _hub.save_for_hf(model, str(folder), model_config={"label_names": names}, safe_serialization=True)
    out = tmp_path / "bundle"
    result = run_module("compile", "--weights", folder, "--out", out)  # no --model, no --labels: config.json says
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model.safetensors of my-vit/" in result.stderr
    assert (out / "labels.txt").read_text().splitlines() == names
    images, image_names, torch_out = reference
    compiled = _compiled_logits(out, images, image_names[:8], "float32")
    assert np.abs(compiled - torch_out[:8]).max() <= 1e-3


@pytest.mark.parametrize("config, message", [
    ({"model_type": "swin", "id2label": {"0": "cat"}}, "a 'swin' transformers folder"),
    ({"model_type": "vit", "id2label": {"0": "cat"}}, "no model.safetensors or pytorch_model.bin"),
    ({"architecture": MODEL}, "no model.safetensors or pytorch_model.bin"),
])
def test_a_folder_edgevit_cannot_read_is_one_line(tmp_path, config, message):
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_module("compile", "--weights", tmp_path, "--out", tmp_path / "b"), message)
