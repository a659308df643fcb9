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
    assert from_dir.returncode == 0, from_dir.stderr[-2000:]
    tar_result, dir_result = (json.loads(r.stdout.splitlines()[-1]) for r in (from_tar, from_dir))
    assert tar_result == dir_result and list(tar_result) == [str(image)]  # every image, class, label and score


def test_corrupt_tar_is_one_clear_error(tmp_path):
    archive = tmp_path / "bundle.tar"
    archive.write_bytes(b"not a tar archive at all" * 100)
    result = run_module("runtime", "bench", archive)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")
