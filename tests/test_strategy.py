"""Secure FedAvg at the coordinator, with fake node replies (Flower's reply-builder style)."""

import numpy as np

from common.he import EncryptedVector, decrypt_vector, encrypt_vector
from common.model import build_model, get_flat_weights
from common.wire import HESettings, JobSpec, TrainReply, UpdatePayload
from coordinator.strategy import SecureFedAvg


def weighted(n: int, seed: int) -> np.ndarray:
    w = get_flat_weights(build_model(seed))
    return np.concatenate([w * n, [float(n)]])


def reply(branch: str, payload: UpdatePayload | None, status: str = "ok") -> TrainReply:
    return TrainReply(status=status, branch_id=branch, update=payload, reason=None if status == "ok" else "no")


def test_encrypted_fedavg_equals_plain_weighted_average(ckks_keys):
    secret, public = ckks_keys
    strategy = SecureFedAvg(job=JobSpec(job_id="j"), public_context=public)
    ups = {"B1": weighted(10, 1), "B2": weighted(30, 2)}
    agg = strategy.aggregate_train([reply(b, _ckks(secret, u)) for b, u in ups.items()] + [reply("B3", None, "refused")])
    summed = decrypt_vector(secret, _as_vector(agg.payload))
    expected = (ups["B1"] + ups["B2"])[:-1] / 40
    np.testing.assert_allclose(summed[:-1] / summed[-1], expected, atol=1e-4)
    assert set(agg.contributors) == {"B1", "B2"} and not agg.rejected


def test_malformed_updates_are_rejected_by_name_and_not_summed(ckks_keys):
    secret, public = ckks_keys
    strategy = SecureFedAvg(job=JobSpec(job_id="j"), public_context=public)
    good = reply("B1", _ckks(secret, weighted(10, 1)))
    short = reply("B2", _ckks(secret, weighted(10, 1)[:-5]))
    plain = reply("B3", UpdatePayload.plain(weighted(10, 1)))
    agg = strategy.aggregate_train([good, short, plain])
    assert list(agg.contributors) == ["B1"]
    assert "values" in agg.rejected["B2"] and "plain update to a CKKS job" in agg.rejected["B3"]


def test_no_contributors_gives_no_payload():
    strategy = SecureFedAvg(job=JobSpec(job_id="j", he=HESettings(enabled=False)), public_context=None)
    agg = strategy.aggregate_train([reply("B1", None, "refused")])
    assert agg.payload is None and not agg.contributors


def _ckks(secret, values):
    enc = encrypt_vector(secret, values)
    return UpdatePayload(scheme="CKKS", length=enc.length, chunks=enc.chunks)


def _as_vector(payload):
    return EncryptedVector(length=payload.length, chunks=payload.chunks)
