"""What a lineage event says: who touched which data, for which job, round and purpose."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventKind(str, Enum):
    DATA_READ = "data_read"          # rows read from a branch dataset
    QUARANTINE = "quarantine"        # rows held back by the data contract, counted per reason
    POLICY_DECISION = "policy_decision"  # every field's treatment for a job, with rule and policy hash
    POLICY_CHANGE = "policy_change"  # the node's policy in force changed (new hash, previous hash)
    REFUSAL = "refusal"              # the node refused a job (contract, policy, bad message)
    TRAINING = "training"            # local steps, sampling rate, noise, epsilon spent
    EMISSION = "emission"            # what left the node: digest, bytes, destination
    AGGREGATION = "aggregation"      # which emissions formed which global model version
    EVALUATION = "evaluation"        # held-out accuracy computed on the node


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LineageEvent(BaseModel):
    """One recorded use of data. `details` carries kind-specific facts (never row values)."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    recorded_at: datetime = Field(default_factory=_now)
    kind: EventKind
    actor: str
    job_id: str
    round: int | None = None
    purpose: str
    dataset: str | None = None
    fields: list[str] = Field(default_factory=list)
    row_count: int | None = None
    content_hash: str | None = None
    policy_hash: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
