"""The coordinator's checkpoint of a job: every closed round, and the model it left.

Written after each round closes, atomically (a reader, or a coordinator started again after
a crash, sees the whole previous checkpoint or the whole new one), under
`<coordinator-dir>/checkpoints/<job>.json`. A coordinator started again on the same job
resumes after the last closed round instead of from round 1.

What it holds is what the coordinator already held: round reports, the encrypted aggregate
and the signed updates it sums. Nothing here can make a node spend privacy twice: each node
refuses a round it already took (`node_agent.admission.AdmissionBook.take_round`), whatever
a checkpoint says. The checkpoint is bound to the job's spec hash, so a changed job never
resumes from another job's state.
"""

from __future__ import annotations

import base64
from pathlib import Path

from pydantic import BaseModel, Field

from common.files import write_secret
from common.wire import JobSpec, TrainReply, UpdatePayload, from_bytes, to_bytes
from coordinator.paths import CoordinatorPaths


class StoredPayload(BaseModel):
    """An UpdatePayload with its bytes as base64 text (JSON cannot hold raw bytes)."""

    scheme: str
    length: int
    chunks: list[str]

    @classmethod
    def of(cls, payload: UpdatePayload) -> "StoredPayload":
        return cls(scheme=payload.scheme, length=payload.length,
                   chunks=[base64.b64encode(c).decode("ascii") for c in payload.chunks])

    def payload(self) -> UpdatePayload:
        return UpdatePayload(scheme=self.scheme, length=self.length, chunks=[base64.b64decode(c) for c in self.chunks])


def stored_reply(reply: TrainReply) -> str:
    """A signed reply as text, exactly as it came (`common.wire.to_bytes`), so its signature still checks."""
    return base64.b64encode(to_bytes(reply)).decode("ascii")


def reply_of(text: str) -> TrainReply:
    return from_bytes(base64.b64decode(text), TrainReply)


class JobCheckpoint(BaseModel):
    job_id: str
    spec_hash: str
    rounds: list[dict] = Field(default_factory=list)  # RoundReport, as JSON
    global_round: int = 0  # the last round whose aggregate became the model (0: none yet)
    model: StoredPayload | None = None
    model_contributors: dict[str, str] = Field(default_factory=dict)  # branch -> digest of what it sent
    model_fates: dict | None = None  # CKKS-ring: the signed survivor list of the model's round (RoundFates)
    model_updates: list[str] = Field(default_factory=list)  # the signed updates the model sums (`stored_reply`)
    node_level_history: list[list[float]] = Field(default_factory=list)

    @property
    def closed_rounds(self) -> int:
        return len(self.rounds)


class CheckpointError(ValueError):
    """A checkpoint that belongs to another job or cannot be read; the message names the file."""


def save(root: Path, checkpoint: JobCheckpoint) -> Path:
    path = CoordinatorPaths(root).checkpoint(checkpoint.job_id)
    write_secret(path, checkpoint.model_dump_json().encode())
    return path


def load(root: Path, job: JobSpec) -> JobCheckpoint | None:
    """The job's checkpoint, or None if it has none. One for a job of the same id but another
    spec is refused: resuming it would mix two jobs."""
    path = CoordinatorPaths(root).checkpoint(job.job_id)
    if not path.exists():
        return None
    try:
        checkpoint = JobCheckpoint.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a job checkpoint ({str(exc).splitlines()[0]})") from None
    if checkpoint.spec_hash != job.spec_hash():
        raise CheckpointError(f"{path}: checkpoint of another spec of job {job.job_id} "
                              f"({checkpoint.spec_hash[:12]}, this spec is {job.spec_hash()[:12]})")
    return checkpoint


def closed_rounds(root: Path, job_id: str) -> list[dict]:
    """The round reports closed so far, for whoever watches the job (empty if none)."""
    path = CoordinatorPaths(root).checkpoint(job_id)
    try:
        return JobCheckpoint.model_validate_json(path.read_bytes()).rounds
    except (OSError, ValueError):
        return []
