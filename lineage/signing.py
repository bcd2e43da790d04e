"""Ed25519 keys that sign lineage events: each node and the coordinator hold their own.

The private key stays with its owner (a 0600 PEM file); the public key is what an auditor
verifies against. A key is named by its id: the first 16 bytes of SHA-256 over the raw
public key, in hex.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.files import create_secret_once

PRIVATE_NAME = "lineage-ed25519.key"
PUBLIC_NAME = "lineage-ed25519.pub"


class SigningKeyError(ValueError):
    """A key file that is missing or is not an Ed25519 key; the message names the file."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(source: Path | str | bytes) -> Ed25519PublicKey:
    """From a PEM file path, or PEM text/bytes."""
    where = str(source) if isinstance(source, Path) else "public key"
    try:
        data = Path(source).read_bytes() if isinstance(source, Path) else (source.encode() if isinstance(source, str) else source)
        key = serialization.load_pem_public_key(data)
    except OSError as exc:
        raise SigningKeyError(f"{where}: {exc.strerror or exc}") from None
    except ValueError:
        raise SigningKeyError(f"{where}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{where}: not an Ed25519 public key")
    return key


def verify_signature(public: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        public.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """Who signs: the actor's name and its private key."""

    actor: str
    private_key: Ed25519PrivateKey

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @cached_property
    def key_id(self) -> str:  # read once per sealed event: derived once
        return key_id(self.public_key)

    def sign(self, message: bytes) -> str:
        return self.private_key.sign(message).hex()

    @classmethod
    def generate(cls, actor: str) -> "Signer":
        return cls(actor, Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, actor: str, key_dir: Path) -> "Signer":
        """The actor's key in `key_dir`, made (with its public half beside it) on first use."""
        key_dir = Path(key_dir)
        private_path = key_dir / PRIVATE_NAME
        if not private_path.exists():
            fresh = Ed25519PrivateKey.generate()
            create_secret_once(private_path, fresh.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        try:
            key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        except ValueError:
            raise SigningKeyError(f"{private_path}: not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{private_path}: not an Ed25519 private key")
        public_path = key_dir / PUBLIC_NAME
        if not public_path.exists():
            public_path.write_text(public_pem(key.public_key()))
        return cls(actor, key)
