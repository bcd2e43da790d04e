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
from common.model import build_model
from common.wire import EvaluateReply, JobSpec, TrainInstruction, TrainReply, UpdatePayload


@dataclass
class Aggregate:
    """One round's result: the summed payload, who contributed what, and who was left out."""

    payload: UpdatePayload | None
    contributors: dict[str, str] = field(default_factory=dict)  # branch id -> emission digest
    rejected: dict[str, str] = field(default_factory=dict)  # branch id -> why its update was not summed


class SecureFedAvg:
    def __init__(self, *, job: JobSpec, public_context: ts.Context | None) -> None:
        if job.he.enabled and public_context is None:
            raise ValueError("an encrypted job needs the alliance's public context")
        if public_context is not None and public_context.has_secret_key():
            raise ValueError("refusing a context with a secret key: the coordinator must not decrypt")
        self.job = job
        self.public_context = public_context
        # [n * w ..., n]: the model's parameter count is public (it follows from the job).
        self.update_length = build_model(job.seed, lags=job.lags, horizon=job.horizon).num_parameters() + 1

    def configure_train(self, rnd: int, global_model: UpdatePayload | None) -> TrainInstruction:
        return TrainInstruction(job=self.job, round=rnd, global_model=global_model)

    def aggregate_train(self, replies: list[TrainReply]) -> Aggregate:
        """Sum the well-formed updates; a malformed one is left out and named, never summed.

        `payload` is None when no node contributed.
        """
        expected = "CKKS" if self.job.he.enabled else "plain"
        accepted, rejected = [], {}
        for r in replies:
            if r.status != "ok" or r.update is None:
                continue
            problem = self._check(r.update, expected)
            if problem:
                rejected[r.branch_id] = problem
            else:
                accepted.append(r)
        if not accepted:
            return Aggregate(payload=None, rejected=rejected)
        if expected == "CKKS":
            summed = sum_encrypted(
                self.public_context,
                [EncryptedVector(length=r.update.length, chunks=r.update.chunks) for r in accepted],
            )
            payload = UpdatePayload(scheme="CKKS", length=summed.length, chunks=summed.chunks)
        else:
            payload = UpdatePayload.plain(np.sum([r.update.plain_values() for r in accepted], axis=0))
        return Aggregate(payload=payload, contributors={r.branch_id: r.update.digest() for r in accepted}, rejected=rejected)

    def _check(self, update: UpdatePayload, expected: str) -> str | None:
        if update.scheme != expected:
            return f"sent a {update.scheme} update to a {expected} job"
        if update.length != self.update_length:
            return f"update has {update.length} values, the job's model needs {self.update_length}"
        if expected == "CKKS":
            needed = -(-update.length // self.job.he.params.slots)  # ceil: one ciphertext per slots values
            if len(update.chunks) != needed:
                return f"update has {len(update.chunks)} ciphertexts, {update.length} values need {needed}"
        elif sum(len(c) for c in update.chunks) != 8 * update.length:
            return "plain update's bytes do not match its length"
        return None

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
