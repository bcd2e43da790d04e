"""CKKS as the transport of masked ring digits: packed tight, added exactly, rounded on decryption.

The digits of `common.secagg` are integers; CKKS carries them as real and imaginary parts of
complex slots (N values per ciphertext of degree N), encrypted symmetrically with the job's
secret key and serialised seeded (SEAL stores the seed of the uniform half instead of the half
itself), so one value costs 8 bytes on the wire. N = 8192 with moduli [60, 60] is the smallest
chain at 128-bit security (HE standard) that holds the digits; additions need no more.

Invariant: the coordinator's side (`sum_digits`) loads only ciphertexts that look like what an
honest node makes (this job's parameters, two polynomials, the plan's scale, not transparent)
and holds no key that decrypts; `decrypt_digits` needs the secret key and refuses a sum whose
padding slots are not zero (a ciphertext not made by this codec).
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from typing import Sequence

import numpy as np
import tenseal as ts
from tenseal import sealapi

from common.he import CkksParams, EncryptedVector

SCHEME = "CKKS-ring"


def ring_params(scale_bits: int) -> CkksParams:
    return CkksParams(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 60), global_scale_bits=scale_bits)


def create_job_context(scale_bits: int) -> ts.Context:
    """A fresh key set for one job, made on a node (`node_agent.job_keys`)."""
    params = ring_params(scale_bits)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    ctx.global_scale = 2.0**scale_bits
    return ctx


@lru_cache(maxsize=1)
def _scratch() -> str:
    """A private directory for SEAL's file-only (de)serialisation: memory-backed where there is one."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="sovereign-ckks-", dir=base)


def _dump(saveable) -> bytes:
    fd, path = tempfile.mkstemp(dir=_scratch())
    os.close(fd)
    try:
        saveable.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def _load(seal: sealapi.SEALContext, data: bytes) -> sealapi.Ciphertext:
    fd, path = tempfile.mkstemp(dir=_scratch())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        ct = sealapi.Ciphertext()
        ct.load(seal, path)  # SEAL checks the header, sizes and that every coefficient is below its modulus
        return ct
    finally:
        os.unlink(path)


def _slots(ctx: ts.Context) -> int:
    return ctx.seal_context().data.key_context_data().parms().poly_modulus_degree()  # N real values per ciphertext


def _complex_chunks(values: np.ndarray, per: int) -> list[list[complex]]:
    padded = np.zeros(-(-max(values.size, 1) // per) * per)
    padded[: values.size] = values
    half = per // 2
    return [(c[:half] + 1j * c[half:]).tolist() for c in padded.reshape(-1, per)]


def encrypt_digits(ctx: ts.Context, digits: np.ndarray) -> EncryptedVector:
    """Seeded symmetric encryptions of the digits, N per ciphertext (padding is zero)."""
    seal = ctx.seal_context().data
    encoder, encryptor = sealapi.CKKSEncoder(seal), sealapi.Encryptor(seal, ctx.secret_key().data)
    flat = np.asarray(digits, dtype=np.float64).ravel()
    chunks = []
    for chunk in _complex_chunks(flat, _slots(ctx)):
        plain = sealapi.Plaintext()
        encoder.encode(chunk, ctx.global_scale, plain)
        chunks.append(_dump(encryptor.encrypt_symmetric(plain)))
    return EncryptedVector(scheme=SCHEME, length=int(flat.size), chunks=chunks)


def chunk_count(length: int, ctx: ts.Context) -> int:
    return -(-max(length, 1) // _slots(ctx))


class DigitSum:
    """A running homomorphic sum of digit vectors (the coordinator's side: public context only).
    `add` loads and checks a whole vector before adding any of it, so a bad one (ValueError,
    naming what is wrong) leaves the sum as it was."""

    def __init__(self, ctx: ts.Context, length: int) -> None:
        self.ctx, self.length = ctx, length
        self.seal = ctx.seal_context().data
        self.evaluator = sealapi.Evaluator(self.seal)
        self.totals: list[sealapi.Ciphertext] = []
        self.count = 0

    def add(self, vector: EncryptedVector) -> None:
        problem = _layout_problem(vector, self.length, self.ctx)
        if problem:
            raise ValueError(problem)
        first_level, loaded = self.seal.first_parms_id(), []
        for i, data in enumerate(vector.chunks):
            ct = _load(self.seal, data)
            if ct.size() != 2 or ct.is_transparent() or ct.parms_id() != first_level or \
                    abs(ct.scale - self.ctx.global_scale) > 1e-9 * self.ctx.global_scale:
                raise ValueError(f"ciphertext {i} (size {ct.size()}, scale 2^{np.log2(ct.scale):.1f}) is not a fresh "
                                 f"encryption at the job's scale 2^{np.log2(self.ctx.global_scale):.0f}")
            loaded.append(ct)
        if not self.totals:
            self.totals = loaded
        else:
            for total, ct in zip(self.totals, loaded, strict=True):
                self.evaluator.add_inplace(total, ct)
        self.count += 1

    def result(self, addend: np.ndarray | None = None) -> EncryptedVector:
        """The sum, plus an optional plaintext `addend` (the unmasking correction's digits); call once."""
        if not self.totals:
            raise ValueError("nothing to sum: no encrypted vectors")
        if addend is not None:
            _add_plain(self.ctx, self.evaluator, self.totals, addend, self.length)
        summed = EncryptedVector(scheme=SCHEME, length=self.length, chunks=[_dump(t) for t in self.totals])
        self.totals = []
        return summed


def _add_plain(ctx: ts.Context, evaluator, totals: list, addend: np.ndarray, length: int) -> None:
    values = np.asarray(addend, dtype=np.float64).ravel()
    if values.size != length:
        raise ValueError(f"the addend has {values.size} values, the vectors {length}")
    encoder = sealapi.CKKSEncoder(ctx.seal_context().data)
    for total, chunk in zip(totals, _complex_chunks(values, _slots(ctx)), strict=True):
        plain = sealapi.Plaintext()
        encoder.encode(chunk, ctx.global_scale, plain)
        evaluator.add_plain_inplace(total, plain)


def sum_digits(ctx: ts.Context, vectors: Sequence[EncryptedVector], *, addend: np.ndarray | None = None) -> EncryptedVector:
    """The homomorphic sum of `vectors` plus an optional plaintext `addend`."""
    if not vectors:
        raise ValueError("nothing to sum: no encrypted vectors")
    acc = DigitSum(ctx, vectors[0].length)
    for v in vectors:
        acc.add(v)
    return acc.result(addend)


def add_plain(ctx: ts.Context, vector: EncryptedVector, addend: np.ndarray) -> EncryptedVector:
    """`vector` plus a plaintext: how the coordinator applies the unmasking correction to a sum
    it already holds (no check on `vector`: it is the coordinator's own sum)."""
    seal = ctx.seal_context().data
    totals = [_load(seal, c) for c in vector.chunks]
    _add_plain(ctx, sealapi.Evaluator(seal), totals, addend, vector.length)
    return EncryptedVector(scheme=SCHEME, length=vector.length, chunks=[_dump(t) for t in totals])


def _layout_problem(v: EncryptedVector, length: int, ctx: ts.Context) -> str | None:
    if v.scheme != SCHEME:
        return f"a {v.scheme} vector is not masked ring digits"
    if v.length != length:
        return f"vector has {v.length} values, the others {length}"
    if len(v.chunks) != chunk_count(length, ctx):
        return f"vector has {len(v.chunks)} ciphertexts, {length} values need {chunk_count(length, ctx)}"
    return None


def decrypt_digits(ctx: ts.Context, vector: EncryptedVector) -> np.ndarray:
    """The summed digits as exact integers (the secret key's holders only)."""
    if not ctx.has_secret_key():
        raise PermissionError("this context holds no secret key and cannot decrypt")
    problem = _layout_problem(vector, vector.length, ctx)
    if problem:
        raise ValueError(problem)
    seal = ctx.seal_context().data
    decryptor, encoder = sealapi.Decryptor(seal, ctx.secret_key().data), sealapi.CKKSEncoder(seal)
    values = []
    for data in vector.chunks:
        plain = sealapi.Plaintext()
        decryptor.decrypt(_load(seal, data), plain)
        z = np.asarray(encoder.decode_complex(plain))
        values.append(np.concatenate([z.real, z.imag]))
    flat = np.concatenate(values)
    if not np.isfinite(flat).all():
        raise ValueError("the sum does not decrypt to numbers")
    rounded = np.rint(flat)
    if np.abs(flat - rounded).max() > 0.25 or np.abs(rounded[vector.length:]).max(initial=0) > 0:
        raise ValueError("the sum is not whole digits with empty padding: not a sum of this codec's ciphertexts")
    return rounded[: vector.length].astype(np.int64)
