"""Bundles as a .tar of the directory run the same as the directory."""

import json
import tarfile

from tests.helpers import run_module


def test_tar_bundle_runs(host_bundle, tmp_path, images_dir):
    archive = tmp_path / "bundle.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(host_bundle, arcname=host_bundle.name)
    image = images_dir / "ILSVRC2012_val_00000347.JPEG"
    from_dir = run_module("runtime", "run", host_bundle, image, "--json")
    from_tar = run_module("runtime", "run", archive, image, "--json")
    assert from_tar.returncode == 0, from_tar.stderr[-2000:]
    assert json.loads(from_tar.stdout.splitlines()[-1]).popitem()[1] == json.loads(from_dir.stdout.splitlines()[-1]).popitem()[1]


def test_corrupt_tar_is_one_clear_error(tmp_path):
    archive = tmp_path / "bundle.tar"
    archive.write_bytes(b"not a tar archive at all" * 100)
    result = run_module("runtime", "bench", archive)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
