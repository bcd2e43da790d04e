"""The encrypted-update codec: sums are right, and the coordinator's context cannot decrypt."""

import numpy as np
import pytest
import tenseal as ts

from common.he import (
    CkksParams,
    EncryptedVector,
    decrypt_vector,
    encrypt_vector,
    sum_encrypted,
)
from common.wire import JobSpec
from coordinator.strategy import SecureFedAvg


def test_public_context_has_no_secret_key_and_cannot_decrypt(ckks_keys):
    secret, public = ckks_keys
    assert secret.has_secret_key()
    assert not public.has_secret_key()
    enc = encrypt_vector(secret, np.arange(10.0))
    with pytest.raises(PermissionError):
        decrypt_vector(public, enc)
    # And straight through TenSEAL, bypassing our guard: still no way to decrypt.
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(public, enc.chunks[0]).decrypt()


def test_decrypted_sum_matches_plaintext_weighted_sum(ckks_keys):
    secret, public = ckks_keys
    rng = np.random.default_rng(3)
    length = 9_000  # longer than one ciphertext's 4096 slots: exercises chunking
    updates, weights = [rng.normal(size=length) for _ in range(12)], rng.integers(1, 200, size=12)
    encrypted = [encrypt_vector(secret, np.concatenate([u * w, [w]])) for u, w in zip(updates, weights)]
    assert len(encrypted[0].chunks) == 3
    summed = decrypt_vector(secret, sum_encrypted(public, encrypted))
    expected = sum(u * w for u, w in zip(updates, weights)) / weights.sum()
    np.testing.assert_allclose(summed[:-1] / summed[-1], expected, atol=1e-3)
    assert np.abs(summed[-1] - weights.sum()) < 1e-3


def test_sum_refuses_mismatched_layouts(ckks_keys):
    secret, public = ckks_keys
    a, b = encrypt_vector(secret, np.ones(5)), encrypt_vector(secret, np.ones(6))
    with pytest.raises(ValueError, match="layout"):
        sum_encrypted(public, [a, b])


def test_strategy_refuses_a_context_that_could_decrypt(ckks_keys):
    secret, public = ckks_keys
    with pytest.raises(ValueError, match="secret key"):
        SecureFedAvg(job=JobSpec(job_id="j"), public_context=secret)
    with pytest.raises(ValueError, match="public context"):
        SecureFedAvg(job=JobSpec(job_id="j"), public_context=None)
    SecureFedAvg(job=JobSpec(job_id="j"), public_context=public)


def test_ciphertexts_are_not_the_plaintext(ckks_keys):
    secret, _ = ckks_keys
    values = np.full(100, 1234.5678)
    enc = encrypt_vector(secret, values)
    assert values.tobytes() not in b"".join(enc.chunks)
    assert CkksParams().slots == 4096
    assert isinstance(enc, EncryptedVector)
