"""Sealed envelopes between nodes, relayed by a coordinator that cannot open them.

Two kinds, both X25519 + HKDF-SHA256 + ChaCha20-Poly1305 from `cryptography`:

- `seal` / `open_sealed`: to one recipient's public key from a fresh ephemeral key (a job's
  CKKS secret context, sent by the node that made it to every other participant). Who sent it
  is proved by the signature of the message that carries it, not by the envelope.
- `pair_seal` / `pair_open`: between two nodes that each hold a key pair, keyed by their
  agreement, so only the named sender could have made it and only the named recipient can
  open it (the Shamir shares of SecAgg+).

Invariant: every envelope binds `context` (job, round, sender, recipient, what it holds) as
associated data; one opened under another context fails, so the coordinator cannot move an
envelope to another job, round or recipient.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_BYTES = 32
NONCE = bytes(12)  # every envelope key is used for one message only: a fixed nonce is safe


class EnvelopeError(ValueError):
    """An envelope that is malformed, not for this recipient or context, or altered."""


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_public(data: bytes) -> X25519PublicKey:
    if not isinstance(data, bytes) or len(data) != KEY_BYTES:
        raise EnvelopeError(f"an X25519 public key is {KEY_BYTES} bytes, not {len(data) if isinstance(data, bytes) else type(data).__name__}")
    return X25519PublicKey.from_public_bytes(data)


def derive_key(shared: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256: the one way a key agreement becomes a key in this project."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(shared)


def seal(recipient: bytes, plaintext: bytes, context: bytes) -> bytes:
    """`plaintext` readable only with the private key of `recipient` (raw public key bytes)."""
    ephemeral = X25519PrivateKey.generate()
    eph_public = public_bytes(ephemeral)
    key = derive_key(ephemeral.exchange(load_public(recipient)), salt=eph_public + recipient, info=b"sovereign seal|" + context)
    return eph_public + ChaCha20Poly1305(key).encrypt(NONCE, plaintext, context)


def open_sealed(private: X25519PrivateKey, envelope: bytes, context: bytes) -> bytes:
    if not isinstance(envelope, bytes) or len(envelope) < KEY_BYTES + 16:
        raise EnvelopeError("envelope is too short to hold anything")
    eph_public, body = envelope[:KEY_BYTES], envelope[KEY_BYTES:]
    key = derive_key(private.exchange(load_public(eph_public)), salt=eph_public + public_bytes(private),
                     info=b"sovereign seal|" + context)
    try:
        return ChaCha20Poly1305(key).decrypt(NONCE, body, context)
    except InvalidTag:
        raise EnvelopeError("envelope does not open with this key in this context (altered, moved or not ours)") from None


def _pair_key(private: X25519PrivateKey, peer: bytes, sender: bytes, recipient: bytes, context: bytes) -> bytes:
    # the direction is in the key: an envelope from A to B is not one from B to A
    return derive_key(private.exchange(load_public(peer)), salt=sender + recipient, info=b"sovereign pair|" + context)


def pair_seal(private: X25519PrivateKey, recipient: bytes, plaintext: bytes, context: bytes) -> bytes:
    key = _pair_key(private, recipient, public_bytes(private), recipient, context)
    return ChaCha20Poly1305(key).encrypt(NONCE, plaintext, context)


def pair_open(private: X25519PrivateKey, sender: bytes, envelope: bytes, context: bytes) -> bytes:
    key = _pair_key(private, sender, sender, public_bytes(private), context)
    try:
        return ChaCha20Poly1305(key).decrypt(NONCE, envelope, context)
    except InvalidTag:
        raise EnvelopeError("envelope was not sealed by that sender for this node in this context") from None
