"""Bad input gets one clear line on stderr and a non-zero exit, never a traceback."""

import json
import shutil

import pytest

from tests.helpers import assert_one_line_error, run_module


def test_unknown_target():
    assert_one_line_error(run_module("compile", "--target", "pi9"), "unknown target 'pi9'", "rpi5")


def test_unknown_model():
    result = run_module("compile", "--model", "vit_nonexistent_patch16_224")
    assert_one_line_error(result, "unknown model 'vit_nonexistent_patch16_224'", "DeiT")


def test_missing_weights_file(tmp_path):
    assert_one_line_error(run_module("compile", "--weights", tmp_path / "nope.safetensors"), "weights file not found")


def test_no_weights_anywhere(tmp_path):
    result = run_module(
        "compile", "--model", "deit_small_patch16_224",
        env={"EDGEVIT_DATA": str(tmp_path), "HF_HUB_OFFLINE": "1"}, timeout_s=300,
    )
    assert_one_line_error(result, "no weights for deit_small_patch16_224", "--weights")


def test_weights_of_another_model(data):
    result = run_module("compile", "--model", "deit_small_patch16_224", "--weights", data / "deit_tiny_patch16_224.safetensors")
    assert_one_line_error(result, "do not fit deit_small_patch16_224")


def test_image_that_is_not_an_image(host_bundle, tmp_path):
    fake = tmp_path / "cat.jpg"
    fake.write_text("not a jpeg\n")
    assert_one_line_error(run_module("runtime", "run", host_bundle, fake), "cannot read image", "cat.jpg")


def test_missing_image(host_bundle, tmp_path):
    assert_one_line_error(run_module("runtime", "run", host_bundle, tmp_path / "none.jpg"), "cannot read image")


def test_truncated_bundle(host_bundle, tmp_path):
    bundle = shutil.copytree(host_bundle, tmp_path / "bundle")
    library = bundle / "model.so"
    library.write_bytes(library.read_bytes()[: library.stat().st_size // 2])
    assert_one_line_error(run_module("runtime", "bench", bundle, "--repeat", "1"), "model.so", "sha256")


def test_bundle_with_wrong_hash(host_bundle, tmp_path):
    bundle = shutil.copytree(host_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["labels.txt"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_module("runtime", "bench", bundle, "--repeat", "1"), "labels.txt", "sha256")


def test_bundle_missing_manifest(tmp_path):
    assert_one_line_error(run_module("runtime", "bench", tmp_path), "not an edgevit bundle")


def test_bundle_for_another_arch(rpi5_bundle):
    assert_one_line_error(run_module("runtime", "bench", rpi5_bundle, "--repeat", "1"), "built for aarch64", "rpi5")


def test_bad_labels_csv(host_bundle, images_dir, tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("name,class\nx.jpg,1\n")
    assert_one_line_error(run_module("runtime", "eval", host_bundle, "--images", images_dir, "--labels", csv), "file,label")


@pytest.mark.parametrize("args", [["--repeat", "0"], ["--threads", "0"]])
def test_bad_bench_arguments(host_bundle, args):
    assert_one_line_error(run_module("runtime", "bench", host_bundle, *args))
