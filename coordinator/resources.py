"""The coordinator's resources as the store keeps them and the API shows them: nodes, accounts, jobs.

A job carries its spec (the request the nodes judge, `common.wire.JobSpec`), its state and the
history of every step (state, reason, who, when), and each invited node's answer. Roles say
what an account may see: branch IT one node, a regional analyst one region's released
aggregates, a head-office analyst the alliance's, compliance the lineage, admin the accounts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from common.wire import JobSpec
from coordinator.lifecycle import Decision, JobState

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def now() -> str:
    """UTC, one spelling per instant (sorts as text)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Role(str, Enum):
    ADMIN = "admin"
    ANALYST = "analyst"  # head office: alliance-wide released aggregates
    REGIONAL_ANALYST = "regional_analyst"  # one region's released aggregates (scope: the region)
    BRANCH_IT = "branch_it"  # one node (scope: the node id)
    COMPLIANCE = "compliance"  # lineage and job histories, read-only


SCOPED = {Role.REGIONAL_ANALYST: "region", Role.BRANCH_IT: "node"}


class Account(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    role: Role
    scope: str | None = Field(default=None, description="the region of a regional analyst, the node of branch IT")
    created_at: str = Field(default_factory=now)
    revoked: bool = False


class NodeRecord(BaseModel):
    """A dealership's node as the coordinator knows it: what the node itself published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_id: str = Field(pattern=NAME_PATTERN)
    public_key: str = Field(min_length=1, max_length=4096, description="the node's Ed25519 public key (PEM): "
                                                                       "it signs the node's approvals and denials")
    region: str | None = Field(default=None, max_length=64)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    policy_summary: dict = Field(default_factory=dict, description="what the node says its policy releases")
    registered_at: str = Field(default_factory=now)
    last_seen: str | None = None
    revoked: bool = False


class JobStep(BaseModel):
    state: JobState
    reason: str
    actor: str
    at: str


class NodeAnswer(BaseModel):
    node_id: str
    decision: Decision = Decision.PENDING
    reason: str | None = None
    signature: str | None = None
    decided_at: str | None = None


class RoundRecord(BaseModel):
    """One closed round as the coordinator saw it: who contributed, who was left out and why
    (a coarse code: the detail stays in each node's lineage), and node-level ε so far when the
    job has node-level DP. Each node's own ε stays on the node: what the coordinator could
    read off it would reveal the branch's size; the job's ε target bounds every one."""

    round: int
    contributors: list[str] = []
    refused: dict[str, str] = {}
    node_level_epsilon: float | None = None
    seconds: float | None = None
    closed_at: str | None = None
    others_contributing: int | None = None  # in a restricted view: contributors it may not name


class JobRecord(BaseModel):
    job_id: str
    spec: JobSpec
    spec_hash: str
    state: JobState
    min_contributors: int
    created_by: str
    created_at: str
    updated_at: str
    steps: list[JobStep] = []
    nodes: list[NodeAnswer] = []
    results: dict | None = None

    def decisions(self) -> dict[str, Decision]:
        return {a.node_id: a.decision for a in self.nodes}
