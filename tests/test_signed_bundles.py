"""Signed bundles on the board side (the core, libsodium): with a trust store configured (--trusted-keys, then
$EDGEVIT_TRUSTED_KEYS), an unsigned bundle, one signed by another key and one whose model.so and manifest hashes
were rewritten are refused with one line naming the key, by both runners; the correctly signed bundle runs. And the
core's SHA-256 agrees with Python's on every file of the shared data.

Keys are made here with the `cryptography` package, in the format `python -m remote keygen` writes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.bundle import RUNNER, sha256_file
from runtime.signing import SIGNATURE
from tests.helpers import REPO, assert_one_line_error


def keypair(folder: Path, name: str):
    """(private key, its `.pub` line, its key id)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, f"ed25519 {base64.b64encode(public).decode()} {name}", hashlib.sha256(public).hexdigest()[:16]


def sign(bundle: Path, key, name: str) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = key.sign((bundle / "manifest.json").read_bytes())
    (bundle / SIGNATURE).write_text(f"ed25519 {base64.b64encode(public).decode()} "
                                    f"{base64.b64encode(signature).decode()} {name}\n")


def run_both(bundle: Path, image: Path, *options: str, env: dict | None = None) -> dict[str, subprocess.CompletedProcess]:
    """`run` of one image by edgevit-run and by python -m runtime."""
    environment = {**os.environ, **(env or {})}
    argvs = {"edgevit-run": [bundle / RUNNER], "python -m runtime": [sys.executable, "-m", "runtime"]}
    return {name: subprocess.run([*argv, "run", bundle, image, *options], cwd=REPO, env=environment,
                                 capture_output=True, text=True, timeout=300) for name, argv in argvs.items()}


@pytest.fixture(scope="module")
def signed(int8_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("signed")
    farm, farm_pub, farm_id = keypair(folder, "farm-2026")
    other, _, other_id = keypair(folder, "laptop")
    store = folder / "trusted_keys"
    store.write_text(f"# the farm's release key\n\n{farm_pub}\n")
    good = shutil.copytree(int8_bundle, folder / "good")
    sign(good, farm, "farm-2026")
    return {"store": store, "good": good, "farm": farm, "farm_id": farm_id, "other": other, "other_id": other_id,
            "folder": folder}


def test_signed_bundle_runs_with_the_store(signed, images_dir):
    image = images_dir / "ILSVRC2012_val_00000347.JPEG"
    for name, result in run_both(signed["good"], image, "--trusted-keys", str(signed["store"])).items():
        assert result.returncode == 0, (name, result.stderr[-2000:])
    for name, result in run_both(signed["good"], image, env={"EDGEVIT_TRUSTED_KEYS": str(signed["store"])}).items():
        assert result.returncode == 0, (name, result.stderr[-2000:])


def _unsigned(signed) -> tuple[Path, str]:
    bundle = shutil.copytree(signed["good"], signed["folder"] / "unsigned")
    (bundle / SIGNATURE).unlink()
    return bundle, f"is not signed; trusted keys: farm-2026 ({signed['farm_id']})"


def _replaced(signed) -> tuple[Path, str]:
    """model.so replaced by another library that still loads (here the same one with bytes appended) and the
    manifest's hashes rewritten to match: integrity holds, origin does not."""
    bundle = shutil.copytree(signed["good"], signed["folder"] / "replaced")
    (bundle / "model.so").write_bytes((bundle / "model.so").read_bytes() + b"\0" * 64)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.so"] = sha256_file(bundle / "model.so")
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return bundle, f"signature by farm-2026 ({signed['farm_id']}) does not match manifest.json"


def _untrusted(signed) -> tuple[Path, str]:
    bundle = shutil.copytree(signed["good"], signed["folder"] / "untrusted")
    sign(bundle, signed["other"], "laptop")
    return bundle, f"is signed by laptop ({signed['other_id']}), which is not a trusted key"


@pytest.mark.parametrize("make", [_unsigned, _replaced, _untrusted])
def test_refused_naming_the_key(make, signed, images_dir):
    bundle, message = make(signed)
    image = images_dir / "ILSVRC2012_val_00000347.JPEG"
    for name, result in run_both(bundle, image, env={"EDGEVIT_TRUSTED_KEYS": str(signed["store"])}).items():
        assert result.returncode == 2, name
        assert_one_line_error(result, f"bundle {bundle}", message)
    if make is not _untrusted:  # without a trust store the board cannot tell: it runs (integrity only)
        for name, result in run_both(bundle, image).items():
            assert result.returncode == 0, (name, result.stderr[-2000:])


def test_malformed_store_names_file_and_line(signed, images_dir, tmp_path):
    store = tmp_path / "keys"
    store.write_text(signed["store"].read_text() + "ed25519 not-base64 someone\n")
    results = run_both(signed["good"], images_dir / "ILSVRC2012_val_00000347.JPEG", "--trusted-keys", str(store))
    for result in results.values():
        assert result.returncode == 2
        assert_one_line_error(result, f"trust store {store} line 4")


def test_core_sha256_agrees_with_python_on_the_shared_data(int8_bundle, data, tmp_path):
    """A bundle copy whose manifest also lists every file of the shared data (through a link), with Python's sha256:
    the core verifies it (and names a file whose digest is off)."""
    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    (bundle / "data").symlink_to(data.resolve())
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = sorted(p for p in data.resolve().rglob("*") if p.is_file())
    manifest["files"].update({f"data/{p.relative_to(data.resolve())}": sha256_file(p) for p in files})
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    print(f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB")
    result = subprocess.run([bundle / RUNNER, "bench", bundle, "--repeat", "1", "--warmup", "0"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    name = f"data/{files[0].relative_to(data.resolve())}"
    manifest["files"][name] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run([bundle / RUNNER, "bench", bundle, "--repeat", "1"], capture_output=True, text=True, timeout=600)
    assert_one_line_error(result, name, "sha256 mismatch")


def test_compile_sign_and_keygen_meet_the_core(tmp_path, images_dir):
    """The contract between the two sides: a key from `python -m remote keygen` and a bundle from `python -m compile
    --sign` are accepted by the core of both runners with the key's `.pub` line as the trust store."""
    from tests.helpers import compile_timm_folder, run_module

    key = tmp_path / "release"
    assert run_module("remote", "keygen", key, "--name", "release").returncode == 0
    _, bundle = compile_timm_folder("vit_tiny_patch16_224", {"depth": 1, "img_size": 32, "num_classes": 3}, tmp_path,
                                    "--sign", key)
    for name, result in run_both(bundle, images_dir / "ILSVRC2012_val_00000347.JPEG", "--trusted-keys",
                                 f"{key}.pub").items():
        assert result.returncode == 0, (name, result.stderr[-2000:])
