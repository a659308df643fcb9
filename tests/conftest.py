"""Shared fixtures: paths to the real data, CLI runner, and compiled bundles cached across runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cache import edgevit_cache_dir

REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    from compile.models import data_dir as resolve

    return resolve()


@pytest.fixture(scope="session")
def data() -> Path:
    path = data_dir()
    if not (path / "deit_tiny_patch16_224.safetensors").is_file():
        pytest.fail(f"real data not found at {path}: set EDGEVIT_DATA or put shared/data beside the repo")
    return path


def run_module(module: str, *args: str | Path, env: dict | None = None, timeout_s: float = 1800) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the repository root, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})},
    )


def _source_digest() -> str:
    """Hash of everything that shapes a bundle, so cached bundles are rebuilt when the code changes."""
    digest = hashlib.sha256()
    for package in ("compile", "targets", "runtime"):
        for path in sorted((REPO / package).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".toml", ".json"}:
                digest.update(str(path.relative_to(REPO)).encode())
                digest.update(path.read_bytes())
    import tvm

    digest.update(tvm.__version__.encode())
    return digest.hexdigest()[:16]


def cached_bundle(name: str, *compile_args: str) -> Path:
    """Compile a bundle once per source version (python -m compile ... --out CACHE/...) and reuse it."""
    out = edgevit_cache_dir() / "bundles" / _source_digest() / name
    if not (out / "manifest.json").is_file():
        result = run_module("compile", *compile_args, "--out", out)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == str(out)
    return out


@pytest.fixture(scope="session")
def host_bundle(data) -> Path:
    """FP32 DeiT-tiny with the real weights, compiled for this machine."""
    return cached_bundle("deit_tiny-host-fp32", "--target", "host")


@pytest.fixture(scope="session")
def rpi5_bundle(data) -> Path:
    """FP32 DeiT-tiny cross-compiled for a Raspberry Pi 5 (Cortex-A76, dotprod required)."""
    return cached_bundle("deit_tiny-rpi5-fp32", "--target", "rpi5")


@pytest.fixture(scope="session")
def int8_bundle(data) -> Path:
    """int8 DeiT-tiny (integer GEMMs, float nonlinearities) calibrated on the default split, for this machine."""
    return cached_bundle("deit_tiny-host-int8", "--target", "host", "--quant", "int8")


@pytest.fixture(scope="session")
def int8_full_bundle(data) -> Path:
    """int8-full (integer only) DeiT-tiny for this machine."""
    return cached_bundle("deit_tiny-host-int8-full", "--target", "host", "--quant", "int8-full")


@pytest.fixture(scope="session")
def int8_tome_bundle(data) -> Path:
    """int8 DeiT-tiny with ToMe r=8 for this machine."""
    return cached_bundle("deit_tiny-host-int8-tome8", "--target", "host", "--quant", "int8", "--tome-r", "8")


@pytest.fixture(scope="session")
def rpi5_int8_bundle(data) -> Path:
    """int8 DeiT-tiny for a Raspberry Pi 5 (sdot kernels)."""
    return cached_bundle("deit_tiny-rpi5-int8", "--target", "rpi5", "--quant", "int8")


@pytest.fixture(scope="session")
def rpi4_int8_bundle(data) -> Path:
    """int8 DeiT-tiny for a Raspberry Pi 4 (Cortex-A72: no dot product instructions)."""
    return cached_bundle("deit_tiny-rpi4-int8", "--target", "rpi4", "--quant", "int8")


@pytest.fixture(scope="session")
def labels_csv(data) -> Path:
    return data / "imagenet_val_1300" / "labels.csv"


@pytest.fixture(scope="session")
def images_dir(data) -> Path:
    return data / "imagenet_val_1300" / "images"
