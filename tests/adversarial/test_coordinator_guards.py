"""One node cannot stop or silently take over a round, nor speak for another branch: every
update is checked and added in its own guard, and every reply must be signed by the branch
it names, from the node that branch answers from."""

from __future__ import annotations

import numpy as np

from common.he import create_secret_context, encrypt_vector
from common.wire import HESettings, TrainReply, UpdatePayload
from coordinator.guard import ReplyGuard
from coordinator.strategy import SecureFedAvg
from tests.adversarial.conftest import small_job


def test_a_malformed_ciphertext_is_left_out_and_named_while_the_rest_are_summed(alliance):
    job = small_job()
    replies = [alliance.train(b, job, 1) for b in alliance.configs]
    good = replies[:3]
    bad = replies[3].model_copy(update={"update": replies[3].update.model_copy(update={"chunks": [b"\x00garbage" * 50]})})
    foreign_params = create_secret_context(HESettings().params.model_copy(update={"poly_modulus_degree": 16384}))
    wrong = encrypt_vector(foreign_params, np.ones(replies[0].update.length))
    alien = replies[0].model_copy(update={"branch_id": "B999", "update": UpdatePayload(
        scheme="CKKS", length=wrong.length, chunks=wrong.chunks)})
    aggregate = SecureFedAvg(job=job, public_context=alliance.public).aggregate_train([*good, bad, alien])
    assert sorted(aggregate.contributors) == sorted(r.branch_id for r in good)
    assert "could not be read" in aggregate.rejected[bad.branch_id] and aggregate.payload is not None
    assert "B999" in aggregate.rejected


def test_weights_are_bounded_by_the_job_in_a_plain_job():
    job = small_job(he=HESettings(enabled=False))
    strategy = SecureFedAvg(job=job, public_context=None)
    length = strategy.update_length

    def update(branch, weight, count=1.0):
        values = np.concatenate([np.ones(length - 2) * weight, [weight, count]])
        return TrainReply(status="ok", branch_id=branch, update=UpdatePayload.plain(values))

    aggregate = strategy.aggregate_train([update("B1", 10), update("B2", -5), update("B3", 1e9), update("B4", 10, 7.0)])
    assert list(aggregate.contributors) == ["B1"]
    assert "weight" in aggregate.rejected["B2"] and "weight" in aggregate.rejected["B3"] and "slot" in aggregate.rejected["B4"]


def test_a_branch_id_is_bound_to_the_key_and_node_that_answer_for_it(alliance):
    guard = ReplyGuard(alliance.paths.node_lineage_keys)
    job = small_job()
    a, b = list(alliance.configs)[:2]
    reply_a = alliance.train(a, job, 1)
    assert guard.problem(101, reply_a) is None
    forged = reply_a.model_copy(update={"branch_id": b})  # node 101 claims to be branch b with a's signature
    assert "not signed" in guard.problem(102, forged)
    relayed = alliance.train(b, job, 1)
    assert guard.problem(101, relayed) is not None  # node 101 already answered as branch a
    assert guard.problem(102, relayed) is None
    assert "another node" in guard.problem(103, relayed)  # a replayed copy of b's reply from elsewhere
    unknown = reply_a.model_copy(update={"branch_id": "B999"})
    assert "no registered lineage key" in guard.problem(104, unknown)


def test_a_ciphertext_relabelled_as_a_shorter_vector_is_not_decrypted(ckks_keys):
    """A coordinator that sends another vector's ciphertext under a shorter length, to have a
    node decrypt that vector's first values: the slots are not periodic in the claimed length."""
    import pytest

    from common.he import EncryptedVector, decrypt_checked, decrypt_vector

    secret, _ = ckks_keys
    update = encrypt_vector(secret, np.linspace(-1, 1, 2440))
    relabelled = EncryptedVector(length=18, chunks=update.chunks)
    assert decrypt_vector(secret, relabelled).size == 18  # the unguarded path would hand out 18 values
    with pytest.raises(ValueError, match="holds more than"):
        decrypt_checked(secret, relabelled)
    honest = encrypt_vector(secret, np.arange(18.0))
    np.testing.assert_allclose(decrypt_checked(secret, honest), np.arange(18.0), atol=1e-4)


def test_a_ciphertext_at_another_scale_cannot_take_over_the_sum_by_arriving_first(alliance):
    """Summed in arrival order, a first payload at another CKKS scale would make every honest
    update fail to add: each payload is checked against the job's scale before it is added."""
    import tenseal as ts

    job = small_job()
    replies = [alliance.train(b, job, 1) for b in alliance.configs]
    length = replies[0].update.length
    odd = ts.ckks_vector(alliance.public, list(np.ones(length)), scale=2.0**30)
    evil = replies[0].model_copy(update={"branch_id": "EVIL", "update": UpdatePayload(
        scheme="CKKS", length=length, chunks=[odd.serialize()])})
    aggregate = SecureFedAvg(job=job, public_context=alliance.public).aggregate_train([evil, *replies])
    assert sorted(aggregate.contributors) == sorted(r.branch_id for r in replies)
    assert "scale" in aggregate.rejected["EVIL"]


def test_one_odd_release_reply_neither_stops_the_job_nor_is_believed():
    from common import evaluation
    from common.wire import ReleaseReply
    from coordinator.rounds import agreed_release

    good = [0.5] * evaluation.LENGTH
    replies = [ReleaseReply(status="ok", branch_id="B1", values=[1.0] * 5),
               ReleaseReply(status="ok", branch_id="B2", values=good), ReleaseReply(status="ok", branch_id="B3", values=good)]
    assert agreed_release(replies) == (good, ["B2", "B3"])
    liar = ReleaseReply(status="ok", branch_id="B4", values=[0.9] * evaluation.LENGTH)
    assert agreed_release([*replies, liar])[0] is None
