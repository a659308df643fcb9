"""What several test modules share: the CLI runner, the one-line-error check, bundles compiled once per
source version, and a fake INA3221 sysfs tree."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.cache import edgevit_cache_dir

REPO = Path(__file__).resolve().parent.parent


def run_module(module: str, *args: str | Path, env: dict | None = None,
               timeout_s: float = 1800) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the repository root, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})},
    )


def lower_for_cpu(module, target, database=None):
    """A Relax module through edgevit's CPU lowering (fusion, the tuning database, hand schedules), as a build does."""
    from compile.lowering.cpu import fuse_for_cpu, schedule_for_cpu

    return schedule_for_cpu(fuse_for_cpu(module, target), target, database)


def cpu_executable(module, target):
    """A Relax module built for an llvm target through edgevit's CPU lowering (fusion, hand schedules)."""
    from tvm import relax

    return relax.build(lower_for_cpu(module, target), target=target)


def quantized_graph(model, spec, mode: str, r: int = 0, target=None, **recipe):
    """(the Relax graph, its QuantizedViT) of a timm model quantized in `mode` with ToMe r in every block,
    calibrated on 16 real images (enough for structure and exactness tests); target: the host's by default."""
    from compile.graph.builder import emit_graph
    from compile.model.vit import describe
    from compile.quant.config import QuantConfig
    from compile.quant.quantize import quantize
    from targets import load_preset

    vit = describe(model, [r] * len(model.blocks), spec.mean, spec.std)
    qvit, formats = quantize(model, vit, spec, QuantConfig(mode=mode, calib_count=16, **recipe), log=lambda _: None)
    return emit_graph(qvit.vit, formats, qvit, target or load_preset("host").target()), qvit


def cross_compiled_library(module, preset_name: str, library: Path) -> Path:
    """A Relax module built for an ARM preset and linked by its cross compiler (the test skips without it)."""
    import shutil

    import pytest
    from tvm.support import cc

    from targets import load_preset

    preset = load_preset(preset_name)
    if shutil.which(preset.cross_compiler) is None:
        pytest.skip(f"{preset.cross_compiler} not installed")
    cpu_executable(module, preset.target()).export_library(str(library), fcompile=cc.cross_compiler(preset.cross_compiler))
    return library


def assert_one_line_error(result, *fragments: str) -> None:
    """A failed command: no traceback, the last stderr line starts with 'error: ' and holds every fragment."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines and lines[-1].startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def _source_digest() -> str:
    """Hash of everything that shapes a bundle, so cached bundles are rebuilt when the code changes."""
    digest = hashlib.sha256()
    for package in ("compile", "targets", "runtime"):
        for path in sorted((REPO / package).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".toml", ".json", ".cc", ".h", ".c"}:
                digest.update(str(path.relative_to(REPO)).encode())
                digest.update(path.read_bytes())
    import tvm

    digest.update(tvm.__version__.encode())
    return digest.hexdigest()[:16]


def cached_bundle(name: str, *compile_args: str, dump_ir: bool = False) -> Path:
    """Compile a bundle once per source version (python -m compile ... --out CACHE/...) and reuse it.

    dump_ir: also keep its --dump-ir phases, in bundle_ir(bundle)."""
    out = edgevit_cache_dir() / "bundles" / _source_digest() / name
    if not (out / "manifest.json").is_file():
        dump = ("--dump-ir", bundle_ir(out)) if dump_ir else ()
        result = run_module("compile", *compile_args, *dump, "--out", out)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == str(out)
    return out


def bundle_outputs(bundle: Path, images: Path, names: list[str]):
    """The bundle's outputs (logits or embeddings) [n, D] on the named images, through the binding (its core decodes
    and preprocesses them as its manifest says)."""
    import numpy as np

    from runtime.model import Model

    with Model(bundle) as model:
        return np.stack([model.run(images / name) for name in names])


def bundle_preprocess(bundle: Path):
    """The bundle's input transform, computed by its own core (runtime.preprocess.Preprocess)."""
    from runtime.bundle import CORE, read_manifest
    from runtime.preprocess import Preprocess

    return Preprocess.from_manifest(read_manifest(bundle).input, bundle / CORE)


def compile_timm_folder(name: str, model_args: dict, folder: Path, *flags: str, prepare=None):
    """A random-init timm model with `model_args` (depth, act_layer, ...), changed by `prepare(model)` when given
    (e.g. to load weights), saved in timm's Hugging Face layout in `folder` and compiled from it (`--weights
    folder`: config.json names the model); returns (model, bundle)."""
    import torch

    from compile.model.models import import_timm

    timm = import_timm()
    from timm.models import _hub

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **model_args).eval()
    if prepare is not None:
        prepare(model)
    _hub.save_for_hf(model, str(folder / "weights"), model_args=model_args, safe_serialization=True)
    bundle = folder / "bundle"
    result = run_module("compile", "--weights", folder / "weights", *flags, "--out", bundle)
    assert result.returncode == 0, result.stderr[-3000:]
    return model, bundle


def bundle_ir(bundle: Path) -> Path:
    """Where cached_bundle(..., dump_ir=True) keeps the IR phases of `bundle` (beside it, not in it)."""
    return bundle.with_name(bundle.name + ".ir")


def ina3221_tree(root: Path) -> str:
    """A Jetson INA3221 hwmon tree under `root` (VDD_IN 5 V x 1.2 A); returns the sampler's root glob."""
    hwmon = root / "1-0040" / "hwmon" / "hwmon3"
    hwmon.mkdir(parents=True)
    rails = [("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 300), ("VDD_SOC", 5000, 250)]
    for n, (label, mv, ma) in enumerate(rails, 1):
        (hwmon / f"in{n}_label").write_text(label + "\n")
        (hwmon / f"in{n}_input").write_text(f"{mv}\n")
        (hwmon / f"curr{n}_input").write_text(f"{ma}\n")
    return str(root / "*" / "hwmon" / "hwmon*")


TINY_MODEL = "vit_tiny_patch16_224"  # with TINY_ARGS: 96 px, two blocks of width 64, 10 classes (quick compiles)
TINY_ARGS = {"img_size": 96, "embed_dim": 64, "depth": 2, "num_heads": 2, "num_classes": 10}


def tiny_vit_folder() -> Path:
    """A random-init tiny ViT's checkpoint folder (timm's Hugging Face layout), made once in the test cache."""
    import shutil
    import tempfile

    import torch

    from compile.model.models import import_timm

    folder = edgevit_cache_dir() / "fixtures" / "tiny-vit-96"
    if not (folder / "config.json").is_file():
        timm = import_timm()
        from timm.models import _hub

        torch.manual_seed(0)
        model = timm.create_model(TINY_MODEL, pretrained=False, **TINY_ARGS).eval()
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent))
        _hub.save_for_hf(model, str(staging), model_args=TINY_ARGS, safe_serialization=True)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def tiny_bundle(quant: str, r: int, output: str = "logits", target: str = "host") -> Path:
    """The tiny ViT compiled (cached per source version, with its --dump-ir phases) in one configuration."""
    return cached_bundle(f"tiny96-{target}-{quant}-r{r}-{output}", "--weights", tiny_vit_folder(), "--image-size",
                         "96", "--target", target, "--quant", quant, "--tome-r", str(r), "--output", output,
                         "--calib-count", "8", dump_ir=True)
