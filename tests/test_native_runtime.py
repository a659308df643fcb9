"""The native core (runtime/native: lib/libedgevit.so, its C API edgevit.h, bin/edgevit-run on it) and the Python
CLI on the binding: the same top-5, accuracy and refusals from both, preprocessing bit-identical to Pillow's (the
reference, tests/reference.py), the C API's entry points, no tensor allocation per run, the cached build."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compile.data import CALIBRATION_ROWS
from compile.native import NativeToolchain, build_runner, cached_core, compile_program, host_toolchain
from runtime.errors import EdgevitError
from runtime.manifest import Manifest
from runtime.model import Model
from targets.cpu_features import cpu_features
from tests.helpers import REPO, assert_one_line_error, run_module
from tests.reference import pillow_preprocess

REAL_IMAGES = ("ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00011775.JPEG", "ILSVRC2012_val_00011811.JPEG",
               "ILSVRC2012_val_00000355.JPEG")


@pytest.fixture(scope="module")
def native_int8(int8_bundle) -> Path:
    """Every compiled bundle is self-contained: its core, bin/edgevit-run and lib/ are listed in its manifest."""
    assert {"bin/edgevit-run", "lib/libedgevit.so", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so"} <= set(Manifest.from_dict(
        json.loads((int8_bundle / "manifest.json").read_text())).files)
    return int8_bundle


@pytest.fixture(scope="module")
def native_fp32(host_bundle) -> Path:
    return host_bundle


def native(bundle: Path, *args: str | Path) -> subprocess.CompletedProcess:
    """Run the bundle's own bin/edgevit-run."""
    return subprocess.run([bundle / "bin" / "edgevit-run", *map(str, args)], capture_output=True, text=True, timeout=600)


def last_json(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def edited_copy(bundle: Path, out: Path, edit) -> Path:
    """A copy of `bundle` whose manifest dict went through `edit` (and whose files may be changed by it)."""
    shutil.copytree(bundle, out, symlinks=True)
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest, out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("which", ["native_int8", "native_fp32"])
def test_run_top5_equals_python(which, request, images_dir):
    bundle = request.getfixturevalue(which)
    images = [images_dir / name for name in REAL_IMAGES]
    ours = last_json(native(bundle, "run", bundle, *images, "--json", "--threads", "2"))
    theirs = last_json(run_module("runtime", "run", bundle, *images, "--json", "--threads", "2"))
    assert ours.keys() == theirs.keys()
    for image in theirs:
        assert [(t["class"], t["label"]) for t in ours[image]] == [(t["class"], t["label"]) for t in theirs[image]]
        assert np.allclose([t["score"] for t in ours[image]], [t["score"] for t in theirs[image]], atol=1e-4)


def test_bench_json_both_runners(native_int8):
    """Both runners in one run on the same bundle: the same keys and facts; the binding's process (Python, no numpy)
    within the issue's 45 MB; both latencies printed for the record (no timed assertion)."""
    ours = last_json(native(native_int8, "--threads", "2", "bench", native_int8, "--warmup", "5", "--repeat", "30", "--json"))
    theirs = last_json(run_module("runtime", "bench", native_int8, "--warmup", "5", "--repeat", "30", "--json",
                                  "--threads", "2"))
    print(f"edgevit-run median {ours['median_ms']:.2f} ms, peak RSS {ours['peak_rss_mb']:.1f} MB; python -m runtime "
          f"median {theirs['median_ms']:.2f} ms, peak RSS {theirs['peak_rss_mb']:.1f} MB")
    assert set(theirs) == set(ours)
    manifest = Manifest.from_dict(json.loads((native_int8 / "manifest.json").read_text()))
    assert ours["runtime"] == "native" and theirs["runtime"] == "python" and ours["n"] == 30 and ours["threads"] == 2
    assert 0 < ours["min_ms"] <= ours["median_ms"] <= ours["p90_ms"] <= ours["p99_ms"]
    assert ours["min_ms"] <= ours["mean_ms"] and 0 < ours["peak_rss_mb"] < theirs["peak_rss_mb"] <= 45.5
    assert (ours["model"], ours["target"], ours["quant"], ours["tome"]) == (
        manifest.model.name, manifest.target.preset, manifest.quant.mode, manifest.tome.schedule)
    for key in ("edgevit_version", "tvm_version", "machine", "cpu", "hostname", "tvm_libraries"):
        assert ours[key] == theirs[key], key


@pytest.mark.parametrize("which", ["native_int8", "native_fp32"])
def test_eval_accuracy_equals_python(which, request, images_dir, labels_csv):
    bundle = request.getfixturevalue(which)
    args = ("eval", bundle, "--images", images_dir, "--labels", labels_csv, "--skip", str(CALIBRATION_ROWS),
            "--limit", "100", "--json")
    ours, theirs = last_json(native(bundle, *args)), last_json(run_module("runtime", *args))
    assert ours["n"] == theirs["n"] == 100
    assert ours == theirs  # one core decodes, preprocesses and runs for both


def synthetic_images(folder: Path) -> list[Path]:
    """Images of the kinds convert("RGB") handles differently: gray, alpha, palette, 1/16-bit, CMYK,
    progressive, non-square and strongly downscaled (Pillow's vertical-first pass order)."""
    x, y = np.linspace(0, 1, 640), np.linspace(0, 1, 480)
    rgb = (np.stack([np.outer(y, x), np.outer(1 - y, x), np.outer(y, 1 - x)], -1) * 255).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    images = {
        "noise.png": Image.fromarray(noise), "tall.png": Image.fromarray(noise.transpose(1, 0, 2).copy()),
        "gradient.jpg": Image.fromarray(rgb), "gray.jpg": Image.fromarray(rgb[..., 0]),
        "gray.png": Image.fromarray(rgb[..., 1]), "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., 0]])),
        "la.png": Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA"),
        "palette.png": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "bilevel.png": Image.fromarray(rgb[..., 0] > 128), "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "small.jpg": Image.fromarray(rgb[:100, :150]), "gray16.png": Image.fromarray((np.outer(y, x) * 65535).astype(np.uint16)),
        "tall_big.jpg": Image.fromarray(np.kron(rgb, np.ones((3, 2, 1), np.uint8))),
        "strip.png": Image.fromarray(np.kron(rgb[:60], np.ones((1, 4, 1), np.uint8))),
    }
    paths = []
    for name, image in images.items():
        options = {"quality": 85, "subsampling": 2} if name.endswith(".jpg") else {}
        image.save(folder / name, **options)
        paths.append(folder / name)
    Image.fromarray(rgb).save(folder / "progressive.jpg", quality=90, progressive=True)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(folder / "palette_trns.png", transparency=3)
    return [*paths, folder / "progressive.jpg", folder / "palette_trns.png"]


@pytest.mark.parametrize("which", ["native_int8", "native_fp32"])
@pytest.mark.parametrize("interpolation, resize", [(None, None), ("bilinear", 300), ("bicubic", 224)])
def test_preprocessing_bit_identical_to_pillow(which, interpolation, resize, request, images_dir, tmp_path):
    """The core's input tensor equals Pillow's transform (the reference) byte for byte (uint8 pixels and float32)."""
    def edit(manifest, _):
        manifest["input"]["interpolation"] = interpolation or manifest["input"]["interpolation"]
        manifest["input"]["resize"] = resize or manifest["input"]["resize"]

    bundle = edited_copy(request.getfixturevalue(which), tmp_path / "bundle", edit)
    spec = Manifest.from_dict(json.loads((bundle / "manifest.json").read_text())).input
    images = [*synthetic_images(tmp_path), *sorted(images_dir.iterdir())[:20]]
    with Model(bundle) as model:
        for image in images:
            assert np.array_equal(model.preprocess(image), pillow_preprocess(spec, image)), image.name


def first_error_line(result: subprocess.CompletedProcess) -> str:
    assert_one_line_error(result)
    assert result.returncode == 2
    return result.stderr.strip().splitlines()[-1]


def _corrupt(manifest, path):
    data = bytearray((path / "model.so").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "model.so").write_bytes(bytes(data))


def _missing(manifest, path):
    (path / "labels.txt").unlink()


def _unloadable(path: Path) -> None:
    """model.so replaced by bytes no loader accepts, its sha256 updated: a check made after loading would not be reached."""
    from runtime.bundle import sha256_file

    (path / "model.so").write_bytes(b"\x7fELF not really" * 1000)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.so"] = sha256_file(path / "model.so")
    (path / "manifest.json").write_text(json.dumps(manifest))


def _other_arch(manifest, path):
    manifest["target"].update(arch="aarch64", preset="rpi5")


def _missing_feature(manifest, path):
    absent = [f for f in ("amx_int8", "avx512_vp2intersect", "avx512_fp16", "sve") if f not in cpu_features()]
    manifest["target"]["required_cpu_features"].append(absent[0])


def _schema(manifest, path):
    manifest["schema_version"] = 7


def _unknown_field(manifest, path):
    manifest["input"]["gamma"] = 2.2


@pytest.mark.parametrize("edit", [_corrupt, _missing, _other_arch, _missing_feature, _schema, _unknown_field])
def test_bad_bundle_same_line_from_both(edit, native_int8, tmp_path):
    """The core refuses before loading anything: the same line from edgevit-run and from the binding's CLI."""
    bundle = edited_copy(native_int8, tmp_path / "bad", edit)
    if edit in (_other_arch, _missing_feature):
        _unloadable(bundle)
    ours = native(bundle, "bench", bundle, "--repeat", "1")
    theirs = run_module("runtime", "bench", bundle, "--repeat", "1")
    assert first_error_line(ours) == first_error_line(theirs)
    if edit is _unknown_field:
        assert "unknown field 'gamma'" in first_error_line(ours)


def test_bad_input_is_one_line(native_int8, images_dir, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((images_dir / REAL_IMAGES[0]).read_bytes()[:3000])
    not_image = tmp_path / "cat.jpg"
    not_image.write_text("not a jpeg\n")
    cases = [
        (("run", native_int8, not_image), "cannot read image"),
        (("run", native_int8, truncated), "cannot read image"),
        (("run", native_int8, tmp_path / "nope.jpg"), "cannot read image"),
        (("run", native_int8), "IMAGE"),
        (("run", tmp_path / "nowhere", not_image), "bundle not found"),
        (("run", tmp_path, not_image), "is not an edgevit bundle"),
        (("bench", native_int8, "--threads", "0"), "--threads must be at least 1"),
        (("bench", native_int8, "--repeat", "zero"), "invalid int value"),
        (("bench", native_int8, "--repeat", "0"), "--repeat >= 1"),
        (("fly", native_int8), "invalid command"),
        (("eval", native_int8, "--images", images_dir), "--labels"),
        (("eval", native_int8, "--images", images_dir, "--labels", tmp_path / "none.csv"), "labels file not found"),
    ]
    for args, fragment in cases:
        assert fragment in first_error_line(native(native_int8, *args)), args


def test_features_bundle_eval_refused(native_int8, images_dir, labels_csv, tmp_path):
    bundle = edited_copy(native_int8, tmp_path / "features", lambda m, _: m["model"].update(output="features"))
    result = native(native_int8, "eval", bundle, "--images", images_dir, "--labels", labels_csv, "--limit", "1")
    assert "needs a classifier" in first_error_line(result)


def test_example_c_prints_top5(native_int8, images_dir):
    """example.c uses only edgevit.h; built beside the runner it finds lib/ through the same RPATH."""
    example = compile_program(host_toolchain(), native_int8 / "bin" / "example", REPO / "examples" / "classify.c")
    image = images_dir / REAL_IMAGES[0]
    result = subprocess.run([example, native_int8, image], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = last_json(run_module("runtime", "run", native_int8, image, "--json"))[str(image)]
    assert [line.split(". ", 1)[1].rsplit(" (", 1)[0] for line in result.stdout.splitlines()] == [t["label"] for t in expected]
    example.unlink()


C_API_CHECK = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "edgevit.h"

/* argv: BUNDLE IMAGE RAW WIDTH HEIGHT STRIDE; RAW holds IMAGE's RGB pixels, rows STRIDE bytes apart.
   Prints the logits of run_file, run_image (RAW) and run_tensor (run_file's input), one line each. */
static void print_output(edgevit_model *m) {
  size_t n;
  const float *out = edgevit_output(m, &n);
  for (size_t i = 0; i < n; ++i) printf("%.9g ", out[i]);
  printf("\n");
}

int main(int argc, char **argv) {
  edgevit_model *m = edgevit_open(argv[1], 1);
  int width = atoi(argv[4]), height = atoi(argv[5]), stride = atoi(argv[6]);
  unsigned char *rgb = malloc((size_t)stride * height);
  FILE *f = fopen(argv[3], "rb");
  if (!m || !f || fread(rgb, 1, (size_t)stride * height, f) != (size_t)stride * height) return 3;
  fclose(f);
  if (edgevit_run_file(m, argv[2]) != 0) return 4;
  print_output(m);
  size_t bytes;
  void *tensor = malloc(edgevit_input(m, &bytes) ? bytes : 0);
  memcpy(tensor, edgevit_input(m, NULL), bytes);
  if (edgevit_run_image(m, rgb, width, height, stride, EDGEVIT_RGB) != 0) return 5;
  print_output(m);
  if (edgevit_run_tensor(m, tensor, bytes) != 0) return 6;
  print_output(m);
  if (edgevit_run_tensor(m, tensor, bytes - 1) == 0 || !strstr(edgevit_last_error(), "bytes")) return 7;
  edgevit_close(m);
  free(rgb);
  free(tensor);
  return 0;
}
"""


def test_c_api_image_with_stride_and_tensor_give_the_file_answer(native_int8, images_dir, tmp_path):
    """run_image on padded rows and run_tensor on the preprocessed input give run_file's logits exactly."""
    source = tmp_path / "check.c"
    source.write_text(C_API_CHECK)
    program = compile_program(host_toolchain(), native_int8 / "bin" / "check", source)
    image = images_dir / REAL_IMAGES[1]
    pixels = np.asarray(Image.open(image).convert("RGB"))
    height, width, _ = pixels.shape
    padded = np.zeros((height, width * 3 + 13), np.uint8)
    padded[:, : width * 3] = pixels.reshape(height, -1)
    padded.tofile(tmp_path / "pixels.raw")
    result = subprocess.run([program, native_int8, image, tmp_path / "pixels.raw", str(width), str(height),
                             str(padded.shape[1])], capture_output=True, text=True, timeout=120)
    program.unlink()
    assert result.returncode == 0, (result.returncode, result.stderr)
    from_file, from_image, from_tensor = result.stdout.splitlines()
    assert from_file == from_image == from_tensor and len(from_file.split()) == 1000


def test_steady_state_runs_allocate_no_tensor_memory(native_int8, images_dir):
    """Counted with malloc & co. replaced for the whole process (tests/count_allocations.c): after warm-up, runs
    allocate nothing of 4 KiB or more (the pooled allocator reuses the static memory plan's storage); the small
    allocations left are the Relax VM's tensor headers, the same number every run."""
    program = compile_program(host_toolchain(), native_int8 / "bin" / "count_allocations",
                              Path(__file__).parent / "count_allocations.c")
    counts = {}
    for runs in (5, 10):
        result = subprocess.run([program, native_int8, images_dir / REAL_IMAGES[0], str(runs)], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, (result.returncode, result.stderr)
        counts[runs] = tuple(map(int, result.stdout.split()))
    program.unlink()
    (small_5, large_5), (small_10, large_10) = counts[5], counts[10]
    print(f"per steady-state run: {small_10 / 10:.0f} allocations below 4 KiB, {large_10 / 10:.0f} from 4 KiB")
    assert large_5 == large_10 == 0
    assert small_10 == 2 * small_5  # per-run work, nothing that grows


def test_core_is_cached_and_a_missing_compiler_is_one_line(native_int8, tmp_path):
    toolchain = host_toolchain()
    core = cached_core(toolchain)
    mtime = (core / "lib" / "libedgevit.so").stat().st_mtime_ns
    assert build_runner(tmp_path, toolchain) == [
        "bin/edgevit-run", "lib/libedgevit.so", "lib/libjpeg.so.62", "lib/libpng16.so.16", "lib/libsodium.so.23",
        "lib/libtvm_ffi.so", "lib/libtvm_runtime.so", "lib/libz.so.1"]
    assert (core / "lib" / "libedgevit.so").stat().st_mtime_ns == mtime
    assert (tmp_path / "lib" / "libedgevit.so").read_bytes() == (core / "lib" / "libedgevit.so").read_bytes()
    missing = NativeToolchain(**{**toolchain.__dict__, "cxx": ("aarch64-nonexistent-g++",),
                                 "compiler_hint": "install g++-aarch64-linux-gnu"})
    with pytest.raises(EdgevitError, match=re.escape("aarch64-nonexistent-g++ not found; install g++-aarch64-linux-gnu")):
        build_runner(tmp_path / "other", missing)
