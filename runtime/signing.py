"""Signed bundles: Ed25519 key files, trust stores and manifest.json.sig (README.md, "Signed bundles").

The manifest carries the sha256 of every other bundle file, so a signature over its exact bytes
covers the whole bundle. Reading key lines needs only the standard library (this module goes onto
boards with the runtime); generating keys, signing and verifying import `cryptography` when called,
on the host (`remote keygen`, `compile --sign`, `remote deploy`'s check).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from runtime.atomic_write import write_atomic
from runtime.bundle import MANIFEST
from runtime.errors import EdgevitError

PRIVATE_TAG = "edgevit-ed25519-private"
PUBLIC_TAG = "ed25519"
SIGNATURE = "manifest.json.sig"
KEY_BYTES = 32
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class PublicKey:
    """A public key and the name it goes by; shown as `name (key id)` in every message."""

    name: str
    key: bytes  # 32 bytes

    @property
    def key_id(self) -> str:
        """The first 16 hex digits of sha256(public key bytes)."""
        return hashlib.sha256(self.key).hexdigest()[:16]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_id})"

    def line(self) -> str:
        """Its line in a .pub file or a trust store."""
        return f"{PUBLIC_TAG} {_b64(self.key)} {self.name}"


@dataclass(frozen=True)
class PrivateKey:
    """A signing key (the 32-byte Ed25519 seed) and its name."""

    name: str
    seed: bytes

    def public(self) -> PublicKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        raw = Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(self.name, raw)

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(data)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _decode(text: str, size: int, what: str, where: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if len(data) != size:
        raise EdgevitError(f"{where}: {what} is not {size} bytes of base64")
    return data


def _fields(line: str, tag: str, count: int, where: str) -> list[str]:
    fields = line.strip().split(" ")
    if len(fields) != count or fields[0] != tag or not all(fields):
        raise EdgevitError(f"{where}: expected '{tag} ...' with {count} fields separated by single spaces")
    return fields


def parse_public_key(line: str, where: str) -> PublicKey:
    """`ed25519 <base64 public key> <name>` (a .pub line or a trust store line)."""
    _, key, name = _fields(line, PUBLIC_TAG, 3, where)
    return PublicKey(name, _decode(key, KEY_BYTES, "the public key", where))


def read_private_key(path: Path) -> PrivateKey:
    """A private key file written by `python -m remote keygen`."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise EdgevitError(f"signing key {path}: cannot read it ({err.__class__.__name__})") from None
    _, seed, name = _fields(text, PRIVATE_TAG, 3, f"signing key {path}")
    return PrivateKey(name, _decode(seed, KEY_BYTES, "the key", f"signing key {path}"))


def read_trust_store(path: Path) -> list[PublicKey]:
    """Every key of a trust store: .pub lines; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise EdgevitError(f"trusted keys {path}: cannot read it ({err.__class__.__name__})") from None
    return [parse_public_key(line, f"trusted keys {path}:{number}") for number, line in enumerate(lines, 1)
            if line.strip() and not line.startswith("#")]


def generate_key(path: Path, name: str | None = None) -> PublicKey:
    """A new key pair: `path` (private, mode 0600) and `path`.pub; an existing key is never overwritten."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    name = name or path.name
    if not name.isprintable() or any(c.isspace() for c in name):
        raise EdgevitError(f"key name '{name}' must be printable and have no spaces")
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise EdgevitError(f"{existing} exists; refusing to overwrite a key")
    if not path.parent.is_dir():
        raise EdgevitError(f"no such directory: {path.parent}")
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    key = PrivateKey(name, seed)
    write_atomic(path, f"{PRIVATE_TAG} {_b64(seed)} {name}\n", 0o600)
    public = key.public()
    write_atomic(public_path, public.line() + "\n", 0o644)
    return public


def sign_bundle(bundle: Path, key: PrivateKey) -> None:
    """Write `bundle`/manifest.json.sig: the signer's public key and its signature over manifest.json's bytes."""
    public = key.public()
    signature = key.sign((bundle / MANIFEST).read_bytes())
    (bundle / SIGNATURE).write_text(f"{PUBLIC_TAG} {_b64(public.key)} {_b64(signature)} {public.name}\n")


def verify_bundle(bundle: Path, trusted: list[PublicKey]) -> PublicKey:
    """The trusted key that signed `bundle`'s manifest; refused (EdgevitError, the contract's lines) when the
    bundle is unsigned, signed by a key not in `trusted`, or its signature does not match manifest.json."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = bundle / SIGNATURE
    if not path.is_file():
        names = ", ".join(str(key) for key in trusted) or "none"
        raise EdgevitError(f"bundle {bundle} is not signed; trusted keys: {names}")
    where = f"bundle {bundle}: {SIGNATURE}"
    _, key, signature, name = _fields(path.read_text(), PUBLIC_TAG, 4, where)
    signer = PublicKey(name, _decode(key, KEY_BYTES, "the public key", where))
    signature = _decode(signature, SIGNATURE_BYTES, "the signature", where)
    if signer.key not in {t.key for t in trusted}:
        raise EdgevitError(f"bundle {bundle} is signed by {signer}, which is not a trusted key")
    try:
        Ed25519PublicKey.from_public_bytes(signer.key).verify(signature, (bundle / MANIFEST).read_bytes())
    except InvalidSignature:
        raise EdgevitError(f"bundle {bundle}: signature by {signer} does not match manifest.json") from None
    return signer
