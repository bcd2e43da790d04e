"""Secure federated averaging: the coordinator sums `[n_k * w_k, n_k]` under encryption.

After Flower's strategies: four hooks (configure/aggregate x train/evaluate); the round loop
that calls them lives in `coordinator.rounds`. Division by the total weight happens on the
nodes after decryption, so the coordinator learns neither the model nor any node's weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from common.he import EncryptedVector, sum_encrypted
from common.wire import EvaluateReply, JobSpec, TrainInstruction, TrainReply, UpdatePayload


@dataclass
class Aggregate:
    """One round's result: the summed payload and who contributed what."""

    payload: UpdatePayload
    contributors: dict[str, str] = field(default_factory=dict)  # branch id -> emission digest


class SecureFedAvg:
    def __init__(self, *, job: JobSpec, public_context: ts.Context | None) -> None:
        if job.he.enabled and public_context is None:
            raise ValueError("an encrypted job needs the alliance's public context")
        if public_context is not None and public_context.has_secret_key():
            raise ValueError("refusing a context with a secret key: the coordinator must not decrypt")
        self.job = job
        self.public_context = public_context

    def configure_train(self, rnd: int, global_model: UpdatePayload | None) -> TrainInstruction:
        return TrainInstruction(job=self.job, round=rnd, global_model=global_model)

    def aggregate_train(self, replies: list[TrainReply]) -> Aggregate | None:
        """Sum the accepted updates; None when no node contributed."""
        ok = [r for r in replies if r.status == "ok" and r.update is not None]
        if not ok:
            return None
        expected = "CKKS" if self.job.he.enabled else "plain"
        for r in ok:
            if r.update.scheme != expected:
                raise ValueError(f"node {r.branch_id} sent a {r.update.scheme} update to a {expected} job")
        if expected == "CKKS":
            summed = sum_encrypted(
                self.public_context,
                [EncryptedVector(length=r.update.length, chunks=r.update.chunks) for r in ok],
            )
            payload = UpdatePayload(scheme="CKKS", length=summed.length, chunks=summed.chunks)
        else:
            payload = UpdatePayload.plain(np.sum([r.update.plain_values() for r in ok], axis=0))
        return Aggregate(payload=payload, contributors={r.branch_id: r.update.digest() for r in ok})

    def configure_evaluate(self, rnd: int, global_model: UpdatePayload | None) -> TrainInstruction:
        return TrainInstruction(job=self.job, round=rnd, global_model=global_model)

    def aggregate_evaluate(self, replies: list[EvaluateReply]) -> dict[str, float]:
        """Mean held-out MASE and sMAPE over the nodes that evaluated."""
        ok = [r for r in replies if r.status == "ok" and r.mase is not None]
        if not ok:
            return {}
        return {
            "mase": float(np.mean([r.mase for r in ok])),
            "smape": float(np.mean([r.smape for r in ok])),
            "nodes": float(len(ok)),
        }
