"""One aggregation round, measured: what encryption costs on the wire and in time.

N simulated nodes each send one update of P parameters through the real path: the node-side
codec (`common.he`, or plain float64), the Flower wire codec (`common.wire.to_record` /
`from_record`), the coordinator's guarded sum (`coordinator.strategy.SecureFedAvg`, with the
public context only) and one node's decryption. Nodes work in parallel in a real alliance, so
the round's critical path is one node's encoding, the coordinator's decoding and sum, and one
decryption; all of them are timed in this one process, side by side, so ratios hold on a noisy
machine even where absolute seconds drift.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from common import ring_ckks, secagg
from common.he import CkksParams, EncryptedVector, create_secret_context, decrypt_vector, encrypt_vector, load_context, public_context_bytes
from common.wire import HESettings, JobSpec, MaskingSettings, MaskReply, TrainReply, UpdatePayload, from_record, to_record
from coordinator.strategy import SecureFedAvg
from coordinator.unmasking import MaskedRound
from lineage import Signer
from node_agent.job_keys import JobKeys
from node_agent.masking import MaskingParticipant


class AggregationBench(BaseModel):
    """What one measured round reports (`sovereign bench aggregation --json`)."""

    nodes: int
    params: int
    scheme: str
    ckks: dict | None = Field(description="the CKKS parameters, or None for plaintext")
    bytes_per_update: int
    bytes_per_param: float = Field(description="bytes one node uploads per model parameter")
    seconds: dict[str, float] = Field(description="encode (one node), wire (all replies), sum, decrypt, round")
    max_error: float = Field(description="largest absolute difference from the plaintext sum")


def update_of(node: int, params: int, seed: int = 0) -> np.ndarray:
    """Node `node`'s pre-weighted update `[n * w ..., n, 1]`, like a trained model's: weights of
    a few tenths, its weight n its count of training windows. Made on demand, so a round of
    1,000 nodes x 1M parameters never holds every update at once."""
    rng = np.random.default_rng([seed, node])
    n = int(rng.integers(5, 80))
    return np.concatenate([rng.normal(0, 0.2, params) * n, [float(n), 1.0]])


BATCH = 50  # plaintext replies the strategy sums at a time (its guarded sum is per reply)


def run_round(nodes: int, params: int, *, plaintext: bool = False, scheme: str | None = None, ckks: CkksParams | None = None,
              seed: int = 0, dropped: int = 0, degree: int | None = None) -> AggregationBench:
    """Run and time one round of `nodes` updates of `params` parameters. `scheme`: "ring"
    (per-job key, SecAgg+ masks; the default), "ckks" (one alliance key, real values) or
    "plain"; `dropped` nodes (ring only) share their seeds and then send nothing; `degree`
    (ring only) gives each node that many mask neighbours (SecAgg+'s sparse graph)."""
    if nodes < 1 or params < 1:
        raise ValueError("--nodes and --params must be at least 1")
    scheme = "plain" if plaintext else (scheme or "ring")
    if scheme == "ring":
        return _ring_round(nodes, params, seed=seed, dropped=dropped, degree=degree)
    if scheme not in ("ckks", "plain"):
        raise ValueError(f"--scheme must be ring, ckks or plain, not {scheme!r}")
    plaintext = scheme == "plain"
    ckks = ckks or CkksParams()
    job = JobSpec(job_id="bench", he=HESettings(enabled=not plaintext, params=ckks))
    secret = None if plaintext else create_secret_context(ckks)
    public = None if plaintext else load_context(public_context_bytes(secret))
    strategy = SecureFedAvg(job=job, public_context=public)
    strategy.update_length = params + 2  # the bench's model size, not the job's forecasting model

    def encode(values: np.ndarray) -> UpdatePayload:
        if plaintext:
            return UpdatePayload.plain(values)
        enc = encrypt_vector(secret, values)
        return UpdatePayload(scheme="CKKS", length=enc.length, chunks=enc.chunks)

    encode_total = wire = summing = 0.0
    truth, total, size = np.zeros(params + 2), None, 0
    for start in range(0, nodes, BATCH):  # streamed in batches: memory stays at one batch of updates
        updates = [update_of(i, params, seed) for i in range(start, min(start + BATCH, nodes))]
        truth += np.sum(updates, axis=0)
        started = time.perf_counter()
        payloads = [encode(u) for u in updates]
        encode_total += time.perf_counter() - started
        size = payloads[0].nbytes()
        replies, seconds = _through_the_wire(payloads, first=start)
        wire += seconds
        started = time.perf_counter()
        aggregate = strategy.aggregate_train(replies)
        if aggregate.payload is None or aggregate.rejected:
            raise RuntimeError(f"the strategy left updates out: {aggregate.rejected}")
        part = aggregate.payload.plain_values() if plaintext else strategy._open(aggregate.payload)
        total = part if total is None else strategy._add(total, part)
        summing += time.perf_counter() - started
    encode_one = encode_total / nodes
    started = time.perf_counter()
    if plaintext:
        values = total
    else:
        chunks = [v.serialize() for v in total]
        values = decrypt_vector(secret, EncryptedVector(length=params + 2, chunks=chunks))
    decrypt = time.perf_counter() - started
    return AggregationBench(
        nodes=nodes, params=params, scheme="plain" if plaintext else "CKKS",
        ckks=None if plaintext else ckks.model_dump(mode="json"),
        bytes_per_update=size, bytes_per_param=round(size / params, 3),
        seconds={"encode_one_node": round(encode_one, 5), "wire": round(wire, 4), "sum": round(summing, 4),
                 "decrypt": round(decrypt, 5), "round": round(encode_one + wire + summing + decrypt, 4)},
        max_error=float(np.max(np.abs(values - truth))),
    )


def _through_the_wire(payloads: list[UpdatePayload], *, first: int = 0) -> tuple[list[TrainReply], float]:
    """Every update as a Flower record and back, as the coordinator receives it; seconds."""
    started = time.perf_counter()
    records = [to_record(TrainReply(status="ok", branch_id=f"b{first + i:04d}", update=p)) for i, p in enumerate(payloads)]
    replies = [from_record(r, TrainReply) for r in records]
    return replies, time.perf_counter() - started


def _ring_round(nodes: int, params: int, *, seed: int, dropped: int, degree: int | None) -> AggregationBench:
    """The collusion-resistant path: a per-job key from the node-side ceremony, every node's
    SecAgg+ participant (adverts, sealed shares, masking, consent, unmasking), the CKKS-ring
    codec, the guarded strategy's sum and the coordinator's correction."""
    if not 0 <= dropped <= nodes - 2:
        raise ValueError("--dropped must leave at least two nodes that send")
    ids = [f"b{i:04d}" for i in range(nodes)]
    job = JobSpec(job_id="bench", he=HESettings(scheme="CKKS-ring", masking=MaskingSettings(degree=degree)))
    with tempfile.TemporaryDirectory(prefix="sovereign-bench-") as tmp:
        signers = {b: Signer.generate(b) for b in ids}
        peers = {b: s.public_key for b, s in signers.items()}
        started = time.perf_counter()
        keys = {b: JobKeys(b, Path(tmp) / b / "keys", signers[b], peers.get) for b in ids}
        deal = keys[ids[0]].deal(job, [keys[b].advertise(job) for b in ids])
        contexts = {ids[0]: keys[ids[0]].context(job)} | {b: keys[b].install(job, deal.for_branch(b)) for b in ids[1:]}
        ceremony = time.perf_counter() - started
        public = load_context(bytes.fromhex(deal.public_context))
        plan = secagg.plan_ring(nodes, job.he.masking.clip)
        strategy = SecureFedAvg(job=job, public_context=public)
        parts = {b: MaskingParticipant(b, Path(tmp) / b / "masks", signers[b], peers.get) for b in ids}
        coordinator = MaskedRound(job, 1)

        started = time.perf_counter()
        adverts = coordinator.take_adverts([MaskReply(status="ok", branch_id=b, advert=parts[b].advertise(job, 1)) for b in ids])
        coordinator.take_shares([MaskReply(status="ok", branch_id=b, shares=parts[b].share(job, 1, adverts)) for b in ids])
        setup_one = (time.perf_counter() - started) / nodes
        senders = ids[dropped:]
        ring_sum = strategy.ring_aggregation((params + 2) * plan.digits)  # digits, as the round loop sums them
        encode_total = wire = summing = 0.0
        size = 0
        truth = np.zeros(params + 2)
        for b in senders:  # streamed, as replies arrive: the coordinator holds the running sum, not every update
            update = update_of(ids.index(b), params, seed)
            truth += update
            started = time.perf_counter()
            ring = parts[b].mask(job, 1, update, plan, coordinator.shares_for(b))
            enc = ring_ckks.encrypt_digits(contexts[b], secagg.to_digits(ring, plan))
            payload = UpdatePayload(scheme="CKKS-ring", length=enc.length, chunks=enc.chunks)
            encode_total += time.perf_counter() - started
            size = payload.nbytes()
            (reply,), seconds = _through_the_wire([payload])
            wire += seconds
            started = time.perf_counter()
            ring_sum.add(b, reply.update)
            summing += time.perf_counter() - started
        encode_one = encode_total / len(senders)
        aggregate = ring_sum.result()
        if aggregate.payload is None or aggregate.rejected:
            raise RuntimeError(f"the strategy left updates out: {aggregate.rejected}")
        gone = sorted(set(ids) - set(senders))
        started = time.perf_counter()
        consents = {b: parts[b].consent(job, 1, senders, gone) for b in senders}
        revealed = {b: parts[b].unmask(job, 1, senders, gone, consents) for b in senders}
        unmask_one = (time.perf_counter() - started) / len(senders)
        started = time.perf_counter()
        fix = coordinator.correction(params + 2, plan, set(senders), revealed)
        summed = ring_ckks.add_plain(public, EncryptedVector(scheme="CKKS-ring", length=aggregate.payload.length,
                                                            chunks=aggregate.payload.chunks), secagg.to_digits(fix, plan))
        correcting = time.perf_counter() - started
        started = time.perf_counter()
        total = secagg.dequantise(secagg.from_digits(ring_ckks.decrypt_digits(contexts[ids[-1]], summed), plan), plan)
        decrypt = time.perf_counter() - started
    seconds = {"ceremony": ceremony, "setup_one_node": setup_one, "encode_one_node": encode_one, "wire": wire,
               "sum": summing, "unmask_one_node": unmask_one, "correction": correcting, "decrypt": decrypt}
    seconds["round"] = sum(v for k, v in seconds.items() if k != "ceremony")
    return AggregationBench(
        nodes=nodes, params=params, scheme="CKKS-ring",
        ckks=ring_ckks.ring_params(plan.scale_bits).model_dump(mode="json") | {"ring": plan.model_dump()},
        bytes_per_update=size, bytes_per_param=round(size / params, 3),
        seconds={k: round(v, 5) for k, v in seconds.items()},
        max_error=float(np.max(np.abs(total - truth))),
    )
