"""Cross-compiled rpi5 bundles on an emulated aarch64 board (qemu-user + a Debian arm64 sysroot)."""

import json

import pytest

from tests.conftest import REPO, run_module

IMAGES = ["ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00000355.JPEG"]


def _top5(stdout: str) -> dict[str, list[int]]:
    results = json.loads(stdout.strip().splitlines()[-1])
    return {path.rsplit("/", 1)[-1]: [entry["class"] for entry in top] for path, top in results.items()}


@pytest.mark.slow
def test_rpi5_bundle_on_cortex_a76_matches_host(rpi5_bundle, host_bundle, images_dir):
    from tests.emulated_board import emulated_board

    images = [images_dir / name for name in IMAGES]
    host = run_module("runtime", "run", host_bundle, *images, "--json")
    assert host.returncode == 0, host.stderr[-2000:]

    board = emulated_board("cortex-a76")
    result = board.run(board.python_argv(["-m", "runtime", "run", str(rpi5_bundle), *map(str, images), "--json"]),
                       cwd=REPO, env={"PYTHONPATH": str(REPO)}, timeout_s=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _top5(result.stdout) == _top5(host.stdout)


@pytest.mark.slow
def test_rpi5_bundle_refused_on_cortex_a72(rpi5_bundle, images_dir):
    from tests.emulated_board import emulated_board

    board = emulated_board("cortex-a72")
    result = board.run(board.python_argv(["-m", "runtime", "run", str(rpi5_bundle), str(images_dir / IMAGES[0])]),
                       cwd=REPO, env={"PYTHONPATH": str(REPO)}, timeout_s=600)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "asimddp" in last and "rpi5" in last, last
