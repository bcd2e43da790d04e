"""What a lineage event says: who touched which data, for which job, round and purpose;
and where it stands in its actor's signed hash chain."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

GENESIS = "0" * 64  # the previous hash of an actor's first event


class EventKind(str, Enum):
    DATA_READ = "data_read"              # rows read from a branch dataset: fields, row count, content hash
    QUARANTINE = "quarantine"            # rows held back by the data contract, counted per reason
    POLICY_DECISION = "policy_decision"  # every field's treatment for a job, with rule and policy hash
    POLICY_CHANGE = "policy_change"      # the node's policy in force changed (new hash, previous hash)
    JOB_APPROVAL = "job_approval"        # the data owner's policy accepted a job for its purpose
    REFUSAL = "refusal"                  # the node refused a job (contract, policy, bad message)
    TRAINING = "training"                # local steps, sampling rate, noise, epsilon spent
    EMISSION = "emission"                # what left the node: digest, bytes, destination
    EVALUATION = "evaluation"            # held-out accuracy computed on the node
    AGGREGATION = "aggregation"          # which emissions formed which global model version
    MODEL_RELEASE = "model_release"      # the coordinator released a final model version
    BUDGET_CHANGE = "budget_change"      # a privacy budget was set, spent or changed
    JOB_STATE = "job_state"              # a job moved (draft, requested, running, completed, failed, stopped), and why
    JOB_DECISION = "job_decision"        # a node's signed approval or denial of a job, as the coordinator received it
    CONTRIBUTION_BOUNDING = "contribution_bounding"  # sales of one customer past the yearly cap, dropped from releases
    CUSTOMER_RELEASE = "customer_release"  # a customer-level DP release of the monthly counts: months, noise, ε per year
    KEY_CEREMONY = "key_ceremony"        # a job's CKKS key made, received or destroyed on a node, and for whom


def _now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """UTC, microseconds, `Z`: one spelling per instant, so hashes and range queries agree."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LineageEvent(BaseModel):
    """One recorded use of data. `details` carries kind-specific facts (never row values).

    `digest` is what the event is about, when it is about a thing with an identity: the
    update an emission sent, the global model an aggregation produced or a release released.
    The chain fields (`seq`, `prev_hash`, `event_hash`, `signer`, `signature`) are filled
    by the store when the event is appended.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    recorded_at: datetime = Field(default_factory=_now)
    kind: EventKind
    actor: str = Field(min_length=1, max_length=128)
    job_id: str
    round: int | None = None
    purpose: str
    dataset: str | None = None
    fields: list[str] = Field(default_factory=list)
    row_count: int | None = None
    content_hash: str | None = None
    policy_hash: str | None = None
    digest: str | None = None
    model_version: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    # the chain
    seq: int | None = None
    prev_hash: str | None = None
    event_hash: str | None = None
    signer: str | None = None
    signature: str | None = None

    @field_validator("recorded_at")
    @classmethod
    def _utc_microseconds(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
