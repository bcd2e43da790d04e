"""Secure federated averaging: the coordinator sums `[n_k * w_k, n_k, 1]` under encryption.

After Flower's strategies: four hooks (configure/aggregate x train/evaluate); the round loop
that calls them lives in `coordinator.rounds`. Division by the total weight happens on the
nodes after decryption, so the coordinator learns neither the model nor any node's weight.

One node cannot stop or silently take over a round: every update is checked and added in its
own guard, so a malformed, foreign or out-of-bounds one is left out and named while the rest
are summed. What the coordinator cannot see under encryption (a node's weight) the decrypting
nodes bound instead (`node_agent.agent.NodeAgent._open_aggregate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from common import evaluation, ring_ckks
from common.he import EncryptedVector
from common.model import build_model
from common.wire import EvaluateReply, JobSpec, ReleaseInstruction, RoundFates, TrainInstruction, TrainReply, UpdatePayload


@dataclass
class Aggregate:
    """One sum: the payload, who contributed what, and who was left out."""

    payload: UpdatePayload | None
    contributors: dict[str, str] = field(default_factory=dict)  # branch id -> digest of what it sent
    rejected: dict[str, str] = field(default_factory=dict)  # branch id -> why its payload was not summed
    fates: RoundFates | None = None  # CKKS-ring: who the sum counts, as its survivors signed it


class SecureFedAvg:
    def __init__(self, *, job: JobSpec, public_context: ts.Context | None) -> None:
        if job.he.enabled and public_context is None:
            raise ValueError("an encrypted job needs the alliance's public context")
        if public_context is not None and public_context.has_secret_key():
            raise ValueError("refusing a context with a secret key: the coordinator must not decrypt")
        self.job = job
        self.public_context = public_context
        # [n * w ..., n, 1]: the model's parameter count is public (it follows from the job).
        self.update_length = build_model(job.seed, lags=job.lags, horizon=job.horizon).num_parameters() + 2

    # ----------------------------------------------------------------- train
    def configure_train(self, rnd: int, global_model: Aggregate | None, **extra) -> TrainInstruction:
        return TrainInstruction(job=self.job, round=rnd, global_model=global_model.payload if global_model else None,
                                contributors=global_model.contributors if global_model else {},
                                fates=global_model.fates if global_model else None, **extra)

    def aggregate_train(self, replies: list[TrainReply]) -> Aggregate:
        """Sum the well-formed updates; `payload` is None when no node contributed."""
        return self._sum([(r.branch_id, r.update) for r in replies if r.status == "ok" and r.update is not None],
                         self.update_length, self._plain_update_problem)

    def _plain_update_problem(self, values: np.ndarray) -> str | None:
        weight, count = values[-2], values[-1]
        if count != 1.0:
            return f"update's contributor slot is {count:g}, not 1"
        if not 0 < weight <= self.job.bounds.max_weight:
            return f"update's weight {weight:g} is outside (0, {self.job.bounds.max_weight}]"
        return None

    # ----------------------------------------------------------------- evaluate
    def configure_evaluate(self, rnd: int, global_model: Aggregate, **extra) -> TrainInstruction:
        return self.configure_train(rnd, global_model, **extra)

    def aggregate_evaluate(self, replies: list[EvaluateReply]) -> Aggregate:
        """Sum the nodes' held-out metric vectors (encrypted when the job is)."""
        return self._sum([(r.branch_id, r.metrics) for r in replies if r.status == "ok" and r.metrics is not None],
                         evaluation.LENGTH, _plain_metrics_problem)

    def configure_release(self, rnd: int, metrics: Aggregate, replies: list[EvaluateReply], **extra) -> ReleaseInstruction:
        """Forward every contribution that went into `metrics` as its node signed it: the
        decrypting node checks and adds them itself."""
        return ReleaseInstruction(job=self.job, round=rnd, contributions=summed_replies(metrics, replies), **extra)

    # ----------------------------------------------------------------- the guarded sum
    def _sum(self, sent: list[tuple[str, UpdatePayload]], length: int, plain_problem) -> Aggregate:
        expected = self.job.he.scheme if self.job.he.enabled else "plain"
        if expected == "CKKS-ring":
            return self._ring_sum(sent, length)
        total, contributors, rejected = None, {}, {}
        for branch, payload in sent:
            problem = self._shape_problem(payload, expected, length)
            if problem is None:
                try:
                    part = self._open(payload) if expected == "CKKS" else payload.plain_values()
                    if expected == "plain":
                        problem = "holds values that are not finite numbers" if not np.isfinite(part).all() else plain_problem(part)
                    if problem is None:
                        total = part if total is None else self._add(total, part)
                except Exception as exc:  # noqa: BLE001 - whatever a crafted payload raises, only it is left out
                    problem = f"could not be read or added ({type(exc).__name__}: {str(exc)[:120]})"
            if problem is not None:
                rejected[branch] = problem
            else:
                contributors[branch] = payload.digest()
        if total is None:
            return Aggregate(payload=None, rejected=rejected)
        if expected == "CKKS":
            payload = UpdatePayload(scheme="CKKS", length=length, chunks=[c.serialize() for c in total])
        else:
            payload = UpdatePayload.plain(total)
        return Aggregate(payload=payload, contributors=contributors, rejected=rejected)

    def _ring_sum(self, sent: list[tuple[str, UpdatePayload]], length: int) -> Aggregate:
        ring = self.ring_aggregation(length)
        for branch, payload in sent:
            ring.add(branch, payload)
        return ring.result()

    def ring_aggregation(self, length: int) -> "RingAggregation":
        """A streaming guarded sum of masked digits (a round's updates as they arrive)."""
        return RingAggregation(ring_ckks.DigitSum(self.public_context, length))

    def _open(self, payload: UpdatePayload) -> list:
        vectors = [ts.ckks_vector_from(self.public_context, c) for c in payload.chunks]
        scale = 2.0**self.job.he.params.global_scale_bits
        for v in vectors:
            if v.size() > self.job.he.params.slots:
                raise ValueError("ciphertext holds more slots than the job's parameters allow")
            for ct in v.ciphertext():  # one scale, two polynomials, nothing transparent: what an honest node sends
                if abs(ct.scale - scale) > 1e-6 * scale or ct.size() != 2 or ct.is_transparent():
                    raise ValueError(f"ciphertext (scale 2^{np.log2(ct.scale):.1f}, size {ct.size()}) is not a fresh "
                                     f"encryption at the job's scale 2^{self.job.he.params.global_scale_bits}")
        return vectors

    @staticmethod
    def _add(total, part):
        if isinstance(total, np.ndarray):
            return total + part
        return [a + b for a, b in zip(total, part, strict=True)]

    def _shape_problem(self, payload: UpdatePayload, expected: str, length: int) -> str | None:
        if payload.scheme != expected:
            return f"sent a {payload.scheme} payload to a {expected} job"
        if payload.length != length:
            return f"payload has {payload.length} values, the job needs {length}"
        if expected == "CKKS":
            needed = -(-length // self.job.he.params.slots)  # ceil: one ciphertext per slots values
            if len(payload.chunks) != needed:
                return f"payload has {len(payload.chunks)} ciphertexts, {length} values need {needed}"
        elif sum(len(c) for c in payload.chunks) != 8 * length:
            return "plain payload's bytes do not match its length"
        return None


class RingAggregation:
    """Masked digits, summed as they come: each payload loaded and checked whole before it is
    added, a bad one left out and named. The sum is still masked; `coordinator.unmasking`
    makes the correction that unmasks it."""

    def __init__(self, digits: ring_ckks.DigitSum) -> None:
        self.digits, self.contributors, self.rejected = digits, {}, {}

    def add(self, branch: str, payload: UpdatePayload) -> bool:
        if payload.scheme != "CKKS-ring":
            self.rejected[branch] = f"sent a {payload.scheme} payload to a CKKS-ring job"
            return False
        try:
            self.digits.add(EncryptedVector(scheme=payload.scheme, length=payload.length, chunks=payload.chunks))
        except (ValueError, RuntimeError, TypeError) as exc:  # whatever a crafted payload raises, only it is left out
            self.rejected[branch] = f"could not be read or added ({str(exc)[:160]})"
            return False
        self.contributors[branch] = payload.digest()
        return True

    def result(self) -> Aggregate:
        if not self.contributors:
            return Aggregate(payload=None, rejected=self.rejected)
        summed = self.digits.result()
        return Aggregate(payload=UpdatePayload(scheme="CKKS-ring", length=summed.length, chunks=summed.chunks),
                         contributors=self.contributors, rejected=self.rejected)


def summed_replies(aggregate: Aggregate, replies: list) -> list:
    """The replies whose payload (update or metric vector) went into `aggregate`, as their
    nodes signed them: what a node that checks a sum itself is forwarded."""
    return [r for r in replies if r.carried() is not None and aggregate.contributors.get(r.branch_id) == r.carried().digest()]


def _plain_metrics_problem(values: np.ndarray) -> str | None:
    if values[evaluation.BLOCK - 1] != 1.0 or values.min() < 0 or (values > evaluation.CEILINGS).any():
        return "metric vector is not one node's bounded scores"
    return None
