"""Shared fixtures: paths to the real data and compiled bundles cached across runs (helpers: tests/helpers.py);
the run fails when a process the tests started is still running at its end."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import cached_bundle
from tests.processes import leftover_processes


def pytest_configure(config):
    """The tests run what they compile in this process: ask Linux for the AMX tile state the host's int8 GEMMs
    use (a bundle's library asks when it is loaded; compiling asks nothing). Ctrl-C reaches the commands the tests
    start even when pytest itself was started in the background by a script (which ignores SIGINT, and an ignored
    signal stays ignored in every child): the tests that stop a farm or a stream with SIGINT rely on it."""
    from targets.cpu_features import request_amx_tiles

    request_amx_tiles()
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(trylast=True)  # after the session fixtures are torn down
def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a process it started outlives it (killed here after a short grace period)."""
    leftovers = leftover_processes()
    if leftovers:
        report = session.config.pluginmanager.get_plugin("terminalreporter")
        if report is not None:
            report.write("\n")
        write = report.write_line if report is not None else lambda line, **_: print(line, file=sys.stderr)
        write("error: processes started by the tests were still running at the end (killed now):", red=True)
        for line in leftovers:
            write(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def data_dir() -> Path:
    from compile.data import data_dir as resolve

    return resolve()


@pytest.fixture(scope="session")
def data() -> Path:
    path = data_dir()
    if not (path / "deit_tiny_patch16_224.safetensors").is_file():
        pytest.fail(f"real data not found at {path}: set EDGEVIT_DATA or put shared/data beside the repo")
    return path


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
def int8_features_bundle(data) -> Path:
    """The int8 DeiT-tiny without its head: the pooled embedding (the bundle tests/test_features.py compiles)."""
    return cached_bundle("deit_tiny-host-int8-features", "--target", "host", "--quant", "int8", "--output", "features")


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
