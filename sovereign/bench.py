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

import time

import numpy as np
from pydantic import BaseModel, Field

from common.he import CkksParams, EncryptedVector, create_secret_context, decrypt_vector, encrypt_vector, load_context, public_context_bytes
from common.wire import HESettings, JobSpec, TrainReply, UpdatePayload, from_record, to_record
from coordinator.strategy import SecureFedAvg


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


def updates_for(nodes: int, params: int, seed: int = 0) -> list[np.ndarray]:
    """Pre-weighted updates `[n * w ..., n, 1]` like a trained model's: weights of a few tenths,
    each node's weight n its count of training windows."""
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.normal(0, 0.2, params) * n, [float(n), 1.0]]) for n in rng.integers(5, 80, nodes)]


def run_round(nodes: int, params: int, *, plaintext: bool = False, ckks: CkksParams | None = None,
              seed: int = 0) -> AggregationBench:
    """Run and time one round of `nodes` updates of `params` parameters."""
    if nodes < 1 or params < 1:
        raise ValueError("--nodes and --params must be at least 1")
    ckks = ckks or CkksParams()
    job = JobSpec(job_id="bench", he=HESettings(enabled=not plaintext, params=ckks))
    secret = None if plaintext else create_secret_context(ckks)
    public = None if plaintext else load_context(public_context_bytes(secret))
    strategy = SecureFedAvg(job=job, public_context=public)
    strategy.update_length = params + 2  # the bench's model size, not the job's forecasting model
    updates = updates_for(nodes, params, seed)

    def encode(values: np.ndarray) -> UpdatePayload:
        if plaintext:
            return UpdatePayload.plain(values)
        enc = encrypt_vector(secret, values)
        return UpdatePayload(scheme="CKKS", length=enc.length, chunks=enc.chunks)

    started = time.perf_counter()
    payloads = [encode(u) for u in updates]
    encode_one = (time.perf_counter() - started) / nodes
    started = time.perf_counter()
    records = [to_record(TrainReply(status="ok", branch_id=f"b{i:04d}", update=p)) for i, p in enumerate(payloads)]
    replies = [from_record(r, TrainReply) for r in records]
    wire = time.perf_counter() - started
    started = time.perf_counter()
    aggregate = strategy.aggregate_train(replies)
    summing = time.perf_counter() - started
    if aggregate.payload is None or aggregate.rejected:
        raise RuntimeError(f"the strategy left updates out: {aggregate.rejected}")
    started = time.perf_counter()
    if plaintext:
        total = aggregate.payload.plain_values()
    else:
        total = decrypt_vector(secret, EncryptedVector(length=aggregate.payload.length, chunks=aggregate.payload.chunks))
    decrypt = time.perf_counter() - started
    size = payloads[0].nbytes()
    return AggregationBench(
        nodes=nodes, params=params, scheme="plain" if plaintext else "CKKS",
        ckks=None if plaintext else ckks.model_dump(mode="json"),
        bytes_per_update=size, bytes_per_param=round(size / params, 3),
        seconds={"encode_one_node": round(encode_one, 5), "wire": round(wire, 4), "sum": round(summing, 4),
                 "decrypt": round(decrypt, 5), "round": round(encode_one + wire + summing + decrypt, 4)},
        max_error=float(np.max(np.abs(total - np.sum(updates, axis=0)))),
    )
