"""Secure FedAvg at the coordinator, with fake node replies (Flower's reply-builder style).

Updates are `[n * w ..., n, 1]`: the last slot counts contributors, so the decrypted sum says
how many updates went into it. Held-out metric vectors (`common.evaluation`) are summed the
same way. The strategy does not check signatures (the round loop's guard does)."""

import numpy as np

from common import evaluation
from common.he import EncryptedVector, decrypt_vector, encrypt_vector
from common.model import build_model, get_flat_weights
from common.wire import (
    EvaluateReply,
    HESettings,
    JobSpec,
    ReleaseInstruction,
    TrainReply,
    UpdateBounds,
    UpdatePayload,
    from_record,
    to_record,
)
from coordinator.strategy import Aggregate, SecureFedAvg


def weighted(n: int, seed: int) -> np.ndarray:
    """A trained-looking model's weights (the initial model is all zeros), weighted by n."""
    w = np.random.default_rng(seed).normal(0, 0.2, size=get_flat_weights(build_model(seed)).size)
    return np.concatenate([w * n, [float(n), 1.0]])


def reply(branch: str, payload: UpdatePayload | None, status: str = "ok") -> TrainReply:
    code = None if status == "ok" else "policy"
    return TrainReply(status=status, branch_id=branch, update=payload, code=code, reason=None if status == "ok" else "no")


def test_encrypted_fedavg_equals_plain_weighted_average(ckks_keys):
    secret, public = ckks_keys
    strategy = SecureFedAvg(job=JobSpec(job_id="j"), public_context=public)
    ups = {"B1": weighted(10, 1), "B2": weighted(30, 2)}
    agg = strategy.aggregate_train([reply(b, _ckks(secret, u)) for b, u in ups.items()] + [reply("B3", None, "refused")])
    summed = decrypt_vector(secret, _as_vector(agg.payload))
    expected = (ups["B1"] + ups["B2"])[:-2] / 40
    np.testing.assert_allclose(summed[:-2] / summed[-2], expected, atol=1e-4)
    assert abs(summed[-1] - 2) < 1e-3  # the count slot: two updates were summed
    assert set(agg.contributors) == {"B1", "B2"} and not agg.rejected


def test_contributors_map_each_branch_to_the_digest_it_sent(ckks_keys):
    secret, public = ckks_keys
    strategy = SecureFedAvg(job=JobSpec(job_id="j"), public_context=public)
    payloads = {"B1": _ckks(secret, weighted(10, 1)), "B2": _ckks(secret, weighted(20, 2))}
    agg = strategy.aggregate_train([reply(b, p) for b, p in payloads.items()])
    assert agg.contributors == {b: p.digest() for b, p in payloads.items()}
    instruction = strategy.configure_train(2, agg)  # what the nodes are told the model sums
    assert instruction.contributors == agg.contributors and instruction.global_model == agg.payload


def test_malformed_updates_are_rejected_by_name_and_not_summed(ckks_keys):
    secret, public = ckks_keys
    strategy = SecureFedAvg(job=JobSpec(job_id="j"), public_context=public)
    good = reply("B1", _ckks(secret, weighted(10, 1)))
    short = reply("B2", _ckks(secret, weighted(10, 1)[:-5]))
    plain = reply("B3", UpdatePayload.plain(weighted(10, 1)))
    agg = strategy.aggregate_train([good, short, plain])
    assert list(agg.contributors) == ["B1"]
    assert "values" in agg.rejected["B2"] and "plain payload to a CKKS job" in agg.rejected["B3"]


def test_plain_updates_with_a_forged_count_or_weight_are_rejected():
    job = JobSpec(job_id="j", he=HESettings(enabled=False), bounds=UpdateBounds(max_weight=100))
    strategy = SecureFedAvg(job=job, public_context=None)
    good = weighted(10, 1)
    twice = good.copy()
    twice[-1] = 2.0  # one update posing as two contributors
    heavy = weighted(500, 2)  # a weight past the job's bound
    nan = good.copy()
    nan[0] = np.nan
    agg = strategy.aggregate_train([reply("B1", UpdatePayload.plain(good)), reply("B2", UpdatePayload.plain(twice)),
                                    reply("B3", UpdatePayload.plain(heavy)), reply("B4", UpdatePayload.plain(nan))])
    assert list(agg.contributors) == ["B1"]
    assert "contributor slot is 2" in agg.rejected["B2"]
    assert "weight 500 is outside (0, 100]" in agg.rejected["B3"]
    assert "not finite" in agg.rejected["B4"]
    np.testing.assert_array_equal(agg.payload.plain_values(), good)


def test_no_contributors_gives_no_payload():
    strategy = SecureFedAvg(job=JobSpec(job_id="j", he=HESettings(enabled=False)), public_context=None)
    agg = strategy.aggregate_train([reply("B1", None, "refused")])
    assert agg.payload is None and not agg.contributors


def _scores(mase: float) -> dict:
    return {arm: {"mase": mase, "smape": 10 * mase, "mae": 3 * mase} for arm in evaluation.ARMS}


def test_metric_vectors_are_summed_and_a_release_asks_for_that_sum(ckks_keys):
    secret, public = ckks_keys
    strategy = SecureFedAvg(job=JobSpec(job_id="j"), public_context=public)
    vectors = {"B1": evaluation.metric_vector(_scores(1.0), young=True),
               "B2": evaluation.metric_vector(_scores(2.0), young=False),
               "B3": evaluation.metric_vector(_scores(3.0), young=False)}
    replies = [EvaluateReply(status="ok", branch_id=b, metrics=_ckks(secret, v)) for b, v in vectors.items()]
    replies.append(EvaluateReply(status="refused", branch_id="B4", code="policy", reason="x"))
    metrics = strategy.aggregate_evaluate(replies)
    assert set(metrics.contributors) == {"B1", "B2", "B3"} and not metrics.rejected
    summed = decrypt_vector(secret, _as_vector(metrics.payload))
    np.testing.assert_allclose(summed, sum(vectors.values()), atol=1e-3)
    figures = evaluation.alliance_figures(list(evaluation.release_values(summed, 3)))
    assert figures["all"]["nodes"] == 3 and figures["all"]["federated"]["mase"] == 2.0
    assert figures["young"]["nodes"] == 0 and figures["young"]["federated"] is None  # one young branch: withheld
    release = strategy.configure_release(1, metrics, replies)
    assert isinstance(release, ReleaseInstruction)  # every summed contribution, forwarded as its node signed it
    assert [r.branch_id for r in release.contributions] == ["B1", "B2", "B3"]
    assert from_record(to_record(release), ReleaseInstruction) == release  # the payloads survive the wire


def test_plain_metric_vectors_that_are_not_one_nodes_scores_are_rejected():
    strategy = SecureFedAvg(job=JobSpec(job_id="j", he=HESettings(enabled=False)), public_context=None)
    good = evaluation.metric_vector(_scores(1.0), young=False)
    doubled = good * 2  # two nodes' worth in one reply
    wrong_length = good[:-1]
    metrics = strategy.aggregate_evaluate([
        EvaluateReply(status="ok", branch_id=b, metrics=UpdatePayload.plain(v))
        for b, v in (("B1", good), ("B2", doubled), ("B3", wrong_length))
    ])
    assert list(metrics.contributors) == ["B1"]
    assert "not one node's bounded scores" in metrics.rejected["B2"] and "values" in metrics.rejected["B3"]
    assert isinstance(metrics, Aggregate)


def _ckks(secret, values):
    enc = encrypt_vector(secret, values)
    return UpdatePayload(scheme="CKKS", length=enc.length, chunks=enc.chunks)


def _as_vector(payload):
    return EncryptedVector(length=payload.length, chunks=payload.chunks)
