"""The encrypted-update codec: TenSEAL CKKS vectors, chunked, with a public/secret split.

Nodes hold the secret context (one alliance key, shared node to node, never via the
coordinator). The coordinator holds a *public* context: it can add ciphertexts but not
decrypt them. Each node encrypts `[n_k * w_k ..., n_k]`; the coordinator sums; a node
decrypts the sum and divides by its last slot, so the updates reveal neither the model nor
any node's weight `n_k` to the coordinator.

Threat model (honest-but-curious coordinator): one shared secret key means a node that
colludes with the coordinator could decrypt every node's update. Released decryptions are
rounded (see `decrypt_vector`) to blunt CKKS key-recovery from exact decryptions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tenseal as ts
from tenseal import sealapi
from pydantic import BaseModel, ConfigDict, Field

SCHEME = "CKKS"


class CkksParams(BaseModel):
    """Encryption parameters. The default [60, 60] chain supports additions only, which is
    all federated averaging needs here (clients pre-weight); it is the smallest ciphertext
    at 128-bit security for N=8192. With a 2^40 scale the summed plaintext must stay below
    about 2^19 in absolute value."""

    model_config = ConfigDict(frozen=True)

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60)
    global_scale_bits: int = 40

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


class EncryptedVector(BaseModel):
    """A real vector as a list of CKKS ciphertexts, each holding at most `slots` values."""

    scheme: str = SCHEME
    length: int = Field(ge=0)
    chunks: list[bytes]

    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)


def create_secret_context(params: CkksParams | None = None) -> ts.Context:
    """A fresh key set. Only ever called on the node side."""
    params = params or CkksParams()
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ctx.global_scale = 2**params.global_scale_bits
    return ctx


def public_context_bytes(ctx: ts.Context) -> bytes:
    """What the coordinator may hold: no secret key, no Galois or relinearisation keys."""
    return ctx.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )


def secret_context_bytes(ctx: ts.Context) -> bytes:
    return ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)


def load_context(data: bytes) -> ts.Context:
    return ts.context_from(data)


def encrypt_vector(ctx: ts.Context, values: np.ndarray) -> EncryptedVector:
    """Encrypt `values` in chunks of at most `slots` values each."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    slots = _slots(ctx)
    chunks = [
        ts.ckks_vector(ctx, flat[i : i + slots].tolist()).serialize()
        for i in range(0, max(flat.size, 1), slots)
    ]
    return EncryptedVector(length=int(flat.size), chunks=chunks)


def sum_encrypted(ctx: ts.Context, vectors: Sequence[EncryptedVector]) -> EncryptedVector:
    """Homomorphic sum; needs only a public context. All vectors must have one layout."""
    if not vectors:
        raise ValueError("nothing to sum: no encrypted vectors")
    first = vectors[0]
    for v in vectors[1:]:
        if v.length != first.length or len(v.chunks) != len(first.chunks) or v.scheme != first.scheme:
            raise ValueError("encrypted vectors differ in layout and cannot be summed")
    out = []
    for i in range(len(first.chunks)):
        acc = ts.ckks_vector_from(ctx, first.chunks[i])
        for v in vectors[1:]:
            acc += ts.ckks_vector_from(ctx, v.chunks[i])
        out.append(acc.serialize())
    return EncryptedVector(length=first.length, chunks=out)


def decrypt_vector(ctx: ts.Context, vector: EncryptedVector, *, decimals: int = 6) -> np.ndarray:
    """Decrypt (needs the secret key) and round, so no exact CKKS decryption is released."""
    if not ctx.has_secret_key():
        raise PermissionError("this context holds no secret key and cannot decrypt")
    values: list[float] = []
    for chunk in vector.chunks:
        values.extend(ts.ckks_vector_from(ctx, chunk).decrypt())
    return np.round(np.asarray(values[: vector.length], dtype=np.float64), decimals)


def decrypt_checked(ctx: ts.Context, vector: EncryptedVector, *, decimals: int = 6) -> np.ndarray:
    """Decrypt every slot of every ciphertext and check it holds only the claimed vector.

    TenSEAL fills a ciphertext's slots by repeating the vector, so an honest chunk of logical
    size L is periodic with period L. A crafted one (another vector's ciphertext whose size
    field was edited down, to read its first values) is not, and raises ValueError.
    """
    if not ctx.has_secret_key():
        raise PermissionError("this context holds no secret key and cannot decrypt")
    slots = _slots(ctx)
    seal = ctx.seal_context().data
    decryptor, encoder = sealapi.Decryptor(seal, ctx.secret_key().data), sealapi.CKKSEncoder(seal)
    values: list[np.ndarray] = []
    for i, chunk in enumerate(vector.chunks):
        size = min(slots, vector.length - i * slots)
        ciphertexts = ts.ckks_vector_from(ctx, chunk).ciphertext()
        if size <= 0 or len(ciphertexts) != 1:
            raise ValueError(f"ciphertext {i} does not hold part of a {vector.length}-value vector")
        plain = sealapi.Plaintext()
        decryptor.decrypt(ciphertexts[0], plain)
        full = np.asarray(encoder.decode_double(plain), dtype=np.float64)
        if full.size != slots or not np.isfinite(full).all():
            raise ValueError(f"ciphertext {i} does not decode to {slots} slots")
        spread = np.abs(full - full[np.arange(slots) % size]).max()
        if spread > 1e-3 * max(1.0, float(np.abs(full).max())):
            raise ValueError(f"ciphertext {i} holds more than its {size} values")
        values.append(full[:size])
    return np.round(np.concatenate(values) if values else np.zeros(0), decimals)


def context_shape(ctx: ts.Context) -> tuple[int, int]:
    """(poly modulus degree, scale bits) of a loaded context: what a node compares a job's
    CKKS parameters with (TenSEAL does not expose the coefficient moduli to Python)."""
    degree = ctx.seal_context().data.key_context_data().parms().poly_modulus_degree()
    return int(degree), int(round(np.log2(ctx.global_scale)))


def _slots(ctx: ts.Context) -> int:
    # TenSEAL does not expose N directly on a Context; encrypting a probe would cost a
    # ciphertext, so read it from the serialized SEAL parameters instead.
    return ctx.seal_context().data.key_context_data().parms().poly_modulus_degree() // 2
