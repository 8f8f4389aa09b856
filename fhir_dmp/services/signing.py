"""Ed25519 keys for the audit checkpoints (docs/audit.md): load, generate, name, sign, check.

The private key never enters the database: it is read from FHIR_DMP_AUDIT_SIGNING_KEY (a PEM file path or the PEM
itself) by the sealing process only. A key is named by its id, the SHA-256 of its raw public key, which every
checkpoint carries; verification needs only public keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)


class BadKey(ValueError):
    """A key that cannot be read or is not an Ed25519 key."""


def canonical(value: object) -> str:
    """The one serialisation a signature covers: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, text: str) -> str:
        return base64.b64encode(self.private.sign(text.encode("utf-8"))).decode("ascii")


def check(public: Ed25519PublicKey, text: str, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), text.encode("utf-8"))
    except (InvalidSignature, ValueError):
        return False
    return True


def _pem_text(value: str) -> str:
    """`value` itself when it holds PEM, else the text of the file it names."""
    if "-----BEGIN" in value:
        return value
    try:
        return Path(value.strip()).read_text()
    except OSError as exc:
        raise BadKey(f"cannot read the key file {value.strip()!r}: {exc.strerror}") from None


def load_signer(value: str) -> Signer:
    """The private key of FHIR_DMP_AUDIT_SIGNING_KEY (a PEM file path or inline PEM, unencrypted PKCS#8)."""
    try:
        private = serialization.load_pem_private_key(_pem_text(value).encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise BadKey(f"FHIR_DMP_AUDIT_SIGNING_KEY is not a readable PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise BadKey("FHIR_DMP_AUDIT_SIGNING_KEY is not an Ed25519 key")
    return Signer(private)


def load_public_keys(value: str) -> list[Ed25519PublicKey]:
    """The public keys of FHIR_DMP_AUDIT_VERIFY_KEY(S): inline PEM (one or more blocks), or file paths separated by
    commas or the path separator, each file holding one or more PEM blocks."""
    texts = [value] if "-----BEGIN" in value else [
        _pem_text(p) for p in re.split(rf"[,{re.escape(os.pathsep)}]", value) if p.strip()]
    keys = []
    for block in (m.group(0) for t in texts for m in _PEM.finditer(t)):
        try:
            public = serialization.load_pem_public_key(block.encode())
        except ValueError as exc:
            raise BadKey(f"not a readable PEM public key: {exc}") from None
        if not isinstance(public, Ed25519PublicKey):
            raise BadKey("a verification key is not an Ed25519 key")
        keys.append(public)
    if not keys:
        raise BadKey("no PEM public key found in the verification keys given")
    return keys


def keyring(signing: str | None, verify: str | None) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key: those listed for verification and the one derived from the signing key."""
    keys = load_public_keys(verify) if verify else []
    if signing:
        keys.append(load_signer(signing).public)
    return {key_id(k): k for k in keys}


def generate(private_path: Path, public_path: Path) -> str:
    """Write a new key pair (the private key created 0600, never overwritten; the public key 0644); its key id."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(private_path, 0o600)  # whatever the umask
    public_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(private.public_key())
