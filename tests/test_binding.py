"""The Python binding (runtime.Model on a bundle's own lib/libedgevit.so): arrays of any row stride and channel order
give what the file gives, every bundle configuration runs, the answers are edgevit-run's, and nothing of TVM's Python
package or compiler is loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from runtime.bundle import RUNNER
from runtime.errors import EdgevitError
from runtime.model import Model
from tests.helpers import REPO, TINY_ARGS, tiny_bundle

IMAGE = "ILSVRC2012_val_00000347.JPEG"


def native(bundle, *args) -> subprocess.CompletedProcess:
    return subprocess.run([bundle / RUNNER, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pixels(images_dir) -> np.ndarray:
    """The test image decoded as the core decodes files (Pillow's convert("RGB") is bit-identical to it)."""
    return np.asarray(Image.open(images_dir / IMAGE).convert("RGB"))


def test_arrays_of_any_layout_give_the_file_answer(int8_bundle, images_dir, pixels):
    """RGB, BGR (OpenCV's order), a channel-reversed view, bottom-up rows, a PIL image and a strided crop view of a
    larger frame: each preprocesses to exactly the tensor the file does, and classifies the same."""
    with Model(int8_bundle, 2) as model:
        from_file = model.preprocess(images_dir / IMAGE)
        expected = model.classify(images_dir / IMAGE)
        height, width, _ = pixels.shape
        frame = np.zeros((height + 40, width + 64, 3), np.uint8)
        frame[17:17 + height, 31:31 + width] = pixels
        crop = frame[17:17 + height, 31:31 + width]  # a view: rows (width + 64) * 3 bytes apart
        assert not crop.flags.c_contiguous and crop.base is not None
        flipped = np.ascontiguousarray(pixels[::-1])[::-1]  # bottom-up rows: a negative row stride
        cases = {"rgb": (pixels, "rgb"), "bgr": (np.ascontiguousarray(pixels[..., ::-1]), "bgr"),
                 "reversed view": (pixels[..., ::-1], "bgr"), "crop view": (crop, "rgb"), "bottom-up": (flipped, "rgb"),
                 "pil": (Image.open(images_dir / IMAGE), "rgb"), "every other column": (frame[:, ::2], "rgb")}
        for name, (image, order) in cases.items():
            if name == "every other column":  # copied (not interleaved), so not the file's image: it only has to run
                assert len(model.classify(image, order=order)) == 5
                continue
            assert np.array_equal(model.preprocess(image, order=order), from_file), name
            assert model.classify(image, order=order) == expected, name


def test_bad_images_are_one_error(int8_bundle, tmp_path):
    with Model(int8_bundle) as model:
        with pytest.raises(EdgevitError, match="H x W x 3 uint8 array"):
            model.classify(np.zeros((8, 8), np.uint8))
        with pytest.raises(EdgevitError, match="H x W x 3 uint8 array"):
            model.classify(np.zeros((8, 8, 3), np.float32))
        with pytest.raises(EdgevitError, match="cannot read image"):
            model.classify(tmp_path / "none.jpg")
        with pytest.raises(EdgevitError, match="embed"):
            model.embed(np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(EdgevitError, match="input of shape"):
            model.run_tensor(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(EdgevitError, match="closed"):
        model.classify(np.zeros((8, 8, 3), np.uint8))


CONFIGURATIONS = [(quant, r, output) for quant in ("fp32", "int8", "int8-full") for r in (0, 8)
                  for output in ("logits", "features")]


@pytest.mark.slow
@pytest.mark.parametrize("quant, r, output", CONFIGURATIONS, ids=lambda value: str(value))
def test_every_configuration_runs_through_the_binding(quant, r, output, data, images_dir, tmp_path):
    """Each configuration (the tiny ViT's bundles, shared with tests/test_bundle_matrix.py) gives through the binding
    what its own edgevit-run gives: the top-5 of a classifier, the embedding (run --save) of a features bundle."""
    bundle = tiny_bundle(quant, r, output)
    saved = tmp_path / "native.npy"
    result = native(bundle, "run", bundle, images_dir / IMAGE, "--save", saved, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    with Model(bundle) as model:
        out = model.run(images_dir / IMAGE)
        assert np.array_equal(out, np.load(saved))
        if model.is_classifier:
            expected = json.loads(result.stdout.splitlines()[-1])[str(images_dir / IMAGE)]
            assert [(p.index, p.label) for p in model.classify(images_dir / IMAGE)] == \
                [(e["class"], e["label"]) for e in expected]
        else:
            assert np.array_equal(model.embed(images_dir / IMAGE), out) and out.shape == (TINY_ARGS["embed_dim"],)


MAPS_PROBE = """
import sys
from runtime.model import Model
with Model(sys.argv[1]) as model:
    print(model.classify(sys.argv[2])[0].label)
print(open("/proc/self/maps").read())
"""


def test_process_maps_no_tvm_python_and_no_compiler(int8_bundle, images_dir):
    """A process that ran a bundle through the binding has mapped the bundle's core and TVM runtime, and neither
    TVM's Python extension nor its compiler library (read from its own /proc/self/maps)."""
    result = subprocess.run([sys.executable, "-c", MAPS_PROBE, str(int8_bundle), str(images_dir / IMAGE)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    label, maps = result.stdout.split("\n", 1)
    mapped = {line.split()[-1] for line in maps.splitlines() if "/" in line}
    assert label == "canoe"
    assert str(int8_bundle / "lib" / "libedgevit.so") in mapped and str(int8_bundle / "lib" / "libtvm_runtime.so") in mapped
    foreign = [path for path in mapped if "compiler" in path or "/tvm/" in path or "tvm_ffi/" in path or "core." in path]
    assert not foreign, foreign
