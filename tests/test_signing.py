"""Signed bundles, the host side: `remote keygen` files, `compile --sign`, and `remote deploy` refusing unsigned,
tampered or foreign bundles for a board (a real sshd) whose inventory entry requires signatures."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from remote.deploy import deploy
from remote.inventory import Board
from remote.ssh import BoardConnection
from runtime.errors import EdgevitError
from runtime.signing import SIGNATURE, read_private_key, read_trust_store, sign_bundle, verify_bundle
from tests.farm_fixtures import keygen, known_hosts_line, start_sshd
from tests.helpers import assert_one_line_error, compile_timm_folder, run_module

B64_32 = r"[A-Za-z0-9+/]{43}="
B64_64 = r"[A-Za-z0-9+/]{86}=="


def _key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def _public_bytes(pub_file: Path) -> bytes:
    return base64.b64decode(pub_file.read_text().split()[1])


@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "release"
    result = run_module("remote", "keygen", path, "--name", "ci-signer")
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory, signer) -> Path:
    """A one-block ViT compiled by `python -m compile ... --sign`."""
    folder = tmp_path_factory.mktemp("signed")
    _, bundle = compile_timm_folder("vit_tiny_patch16_224", {"depth": 1, "img_size": 32, "num_classes": 3}, folder,
                                    "--sign", signer)
    return bundle


def test_keygen_writes_the_key_pair(tmp_path, signer):
    private, public = signer.read_text(), Path(f"{signer}.pub").read_text()
    assert re.fullmatch(rf"edgevit-ed25519-private {B64_32} ci-signer\n", private)
    assert re.fullmatch(rf"ed25519 {B64_32} ci-signer\n", public)
    assert signer.stat().st_mode & 0o777 == 0o600
    seed = base64.b64decode(private.split()[1])
    derived = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert derived == _public_bytes(Path(f"{signer}.pub"))

    plain = tmp_path / "board-key"
    result = run_module("remote", "keygen", plain)
    assert result.returncode == 0, result.stderr
    assert Path(f"{plain}.pub").read_text().endswith(" board-key\n")  # named after the file by default
    assert f"board-key ({_key_id(_public_bytes(Path(f'{plain}.pub')))})" in result.stdout
    before = plain.read_text()
    assert_one_line_error(run_module("remote", "keygen", plain), f"{plain} exists; refusing to overwrite a key")
    assert plain.read_text() == before
    assert_one_line_error(run_module("remote", "keygen", tmp_path / "k2", "--name", "two words"), "no spaces")


def test_compile_sign_writes_a_signature_of_the_manifest(signed_bundle, signer):
    manifest = (signed_bundle / "manifest.json").read_bytes()
    assert SIGNATURE not in json.loads(manifest)["files"]
    tag, public, signature, name = (signed_bundle / SIGNATURE).read_text().split(" ")
    assert tag == "ed25519" and name == "ci-signer\n" and re.fullmatch(B64_64, signature)
    assert base64.b64decode(public) == _public_bytes(Path(f"{signer}.pub"))
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public)).verify(base64.b64decode(signature), manifest)
    trusted = read_trust_store(Path(f"{signer}.pub"))
    assert verify_bundle(signed_bundle, trusted) == trusted[0]


def test_compile_with_a_bad_key_stops_before_compiling(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("ssh-ed25519 AAAA nobody\n")
    assert_one_line_error(run_module("compile", "--random-init", "--sign", bad, "--out", tmp_path / "b"),
                          f"signing key {bad}: expected 'edgevit-ed25519-private ...'")
    assert not (tmp_path / "b").exists()


def test_trust_store_skips_comments_and_names_a_bad_line(tmp_path, signer):
    store = tmp_path / "trusted_keys"
    store.write_text(f"# release key\n\n{Path(f'{signer}.pub').read_text()}ed25519 notbase64 x\n")
    with pytest.raises(EdgevitError, match=f"trusted keys {store}:4: the public key is not 32 bytes of base64"):
        read_trust_store(store)
    store.write_text(f"# release key\n\n{Path(f'{signer}.pub').read_text()}")
    assert [str(k) for k in read_trust_store(store)] == [f"ci-signer ({_key_id(_public_bytes(Path(f'{signer}.pub')))})"]


@pytest.fixture(scope="module")
def board(tmp_path_factory, signer):
    """A board (sshd on 127.0.0.1) whose inventory entry requires bundles signed by `signer`."""
    root = tmp_path_factory.mktemp("signed-board")
    public = keygen(root / "id_farm")
    sshd = start_sshd("secure", root / "sshd", public, None)
    try:
        (root / "known_hosts").write_text(known_hosts_line(sshd) + "\n")
        yield Board(name="secure", host="127.0.0.1", port=sshd.port, preset="host", key_file=root / "id_farm",
                    known_hosts=root / "known_hosts", remote_dir=str(root / "edgevit"), require_signed=True,
                    trusted_keys=Path(f"{signer}.pub"))
    finally:
        sshd.stop()


def _copy(bundle: Path, where: Path) -> Path:
    return Path(shutil.copytree(bundle, where / bundle.name))


def _refused(board: Board, bundle: Path, *fragments: str) -> None:
    with BoardConnection(board) as conn, pytest.raises(EdgevitError) as err:
        deploy(conn, bundle)
    message = str(err.value)
    assert message.startswith(f"board {board.name} requires signed bundles: bundle {bundle}"), message
    for fragment in fragments:
        assert fragment in message, message
    assert not (Path(board.remote_dir) / "bundles" / bundle.name).exists()  # nothing uploaded


def test_deploy_refuses_an_unsigned_bundle(board, signed_bundle, tmp_path, signer):
    unsigned = _copy(signed_bundle, tmp_path)
    (unsigned / SIGNATURE).unlink()
    _refused(board, unsigned, f"is not signed; trusted keys: ci-signer ({_key_id(_public_bytes(Path(f'{signer}.pub')))})")


def test_deploy_refuses_a_replaced_library_with_rewritten_hashes(board, signed_bundle, tmp_path):
    tampered = _copy(signed_bundle, tmp_path)
    library = tampered / "model.so"
    library.write_bytes(library.read_bytes() + b"\0injected")
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["files"]["model.so"] = hashlib.sha256(library.read_bytes()).hexdigest()
    (tampered / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    _refused(board, tampered, "signature by ci-signer", "does not match manifest.json")


def test_deploy_refuses_a_bundle_signed_by_an_untrusted_key(board, signed_bundle, tmp_path):
    result = run_module("remote", "keygen", tmp_path / "mallory")
    assert result.returncode == 0, result.stderr
    foreign = _copy(signed_bundle, tmp_path)
    sign_bundle(foreign, read_private_key(tmp_path / "mallory"))
    key_id = _key_id(_public_bytes(tmp_path / "mallory.pub"))
    _refused(board, foreign, f"is signed by mallory ({key_id}), which is not a trusted key")


def test_deploy_uploads_the_signed_bundle_with_its_signature(board, signed_bundle):
    with BoardConnection(board) as conn:
        placed = deploy(conn, signed_bundle)
    remote = Path(board.remote_dir) / placed.remote_bundle
    assert (remote / SIGNATURE).read_bytes() == (signed_bundle / SIGNATURE).read_bytes()
    assert (remote / "model.so").read_bytes() == (signed_bundle / "model.so").read_bytes()


def test_deploy_cli_refuses_an_unsigned_bundle_for_that_board_only(board, signed_bundle, tmp_path):
    unsigned = _copy(signed_bundle, tmp_path)
    (unsigned / SIGNATURE).unlink()
    inventory = tmp_path / "farm.toml"
    entry = (f'host = "127.0.0.1"\nport = {board.port}\npreset = "host"\nuser = "root"\nkey_file = "{board.key_file}"\n'
             f'known_hosts = "{board.known_hosts}"\n')
    inventory.write_text(
        f'[[board]]\nname = "secure"\n{entry}remote_dir = "{tmp_path / "secure"}"\nrequire_signed = true\n'
        f'trusted_keys = "{board.trusted_keys}"\n'
        f'[[board]]\nname = "open"\n{entry}remote_dir = "{tmp_path / "open"}"\n'
    )
    result = run_module("remote", "--inventory", inventory, "deploy", unsigned)
    assert result.returncode == 1, result.stderr
    assert f"secure: FAILED board secure requires signed bundles: bundle {unsigned} is not signed" in result.stdout
    assert re.search(r"^open: \d+ uploaded", result.stdout, re.M)
    assert not (tmp_path / "secure").exists() and (tmp_path / "open" / "bundles" / unsigned.name / "model.so").is_file()
