"""The data owner's word on each job: approved or denied by hand, for one exact spec, signed.

`sovereign node approve|deny` records it here (beside the privacy ledger) and in the node's
lineage, signed with the node's lineage key over `common.wire.decision_message`, the same
bytes the coordinator checks. The node enforces it itself, whatever the coordinator says: a
job denied here is refused at every instruction, and with `approvals: by_hand` in node.json
a job runs only when this book holds an approval of exactly the spec the instruction carries
(a coordinator that alters an approved spec under the same id brings an unapproved job).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Column, MetaData, String, Table, Text, create_engine, insert, select
from sqlalchemy.exc import IntegrityError

from common.db import tune_sqlite, writer
from common.wire import JobSpec, decision_message
from lineage.models import format_time
from lineage.signing import Signer
from node_agent.admission import Refusal
from node_agent.config import NodeConfig

metadata = MetaData()
decisions_table = Table(
    "owner_decisions", metadata,
    Column("job_id", String(128), primary_key=True), Column("spec_hash", String(64), primary_key=True),
    Column("decision", String(16), nullable=False), Column("reason", Text, nullable=False),
    Column("signature", String(128), nullable=False), Column("decided_at", String(32), nullable=False),
)

APPROVED, DENIED = "approved", "denied"


class AlreadyDecided(ValueError):
    """The owner has already answered this job's spec; a decision stands."""


class OwnerDecisions:
    def __init__(self, url: str) -> None:
        self.engine = tune_sqlite(create_engine(url))
        metadata.create_all(self.engine)

    def decide(self, job: JobSpec, decision: str, reason: str, signer: Signer) -> str:
        """Record the owner's `decision` on exactly this spec; returns its signature (hex)."""
        if decision not in (APPROVED, DENIED):
            raise ValueError(f"decision: {decision!r} is neither {APPROVED} nor {DENIED}")
        spec_hash = job.spec_hash()
        signature = signer.sign(decision_message(job.job_id, spec_hash, decision, reason))
        try:
            with writer(self.engine) as conn:
                conn.execute(insert(decisions_table).values(job_id=job.job_id, spec_hash=spec_hash, decision=decision,
                                                            reason=reason, signature=signature,
                                                            decided_at=format_time(datetime.now(timezone.utc))))
        except IntegrityError:
            raise AlreadyDecided(f"job {job.job_id} was already {self.decision(job.job_id)[0]} here") from None
        return signature

    def decision(self, job_id: str) -> tuple[str, str, str] | None:
        """(decision, spec hash, reason) of the owner's latest word on `job_id`; a denial wins over any approval."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(decisions_table).where(decisions_table.c.job_id == job_id)
                                .order_by(decisions_table.c.decided_at)).mappings().all()
        if not rows:
            return None
        denied = [r for r in rows if r["decision"] == DENIED]
        row = denied[0] if denied else rows[-1]
        return row["decision"], row["spec_hash"], row["reason"]

    def refusal(self, job: JobSpec, *, by_hand: bool) -> Refusal | None:
        """Why the owner's word keeps this node out of `job`: it was denied, or (by hand) it
        has no approval of exactly this spec. None: the node may go on to its other checks."""
        word = self.decision(job.job_id)
        if word is not None and word[0] == DENIED:
            return Refusal("owner-denied", f"job {job.job_id} was denied by this node's owner: {word[2]}")
        if not by_hand:
            return None
        if word is None:
            return Refusal("not-approved", f"job {job.job_id} has not been approved here (node.json approvals: by_hand; "
                                           f"sovereign node approve {job.job_id})")
        if word[1] != job.spec_hash():
            return Refusal("not-approved", f"job {job.job_id} was approved with spec {word[1][:12]}; this instruction "
                                           f"carries spec {job.spec_hash()[:12]}")
        return None


def record_owner_decision(config: NodeConfig, job: JobSpec, decision: str, reason: str) -> str:
    """The owner's word on `job` at this node: in its book and its lineage, signed with its
    lineage key. Returns the signature the coordinator checks. Raises AlreadyDecided."""
    from lineage import EventKind, LineageEvent, LineageStore

    config.privacy_dir.mkdir(parents=True, exist_ok=True)
    signer = Signer.load_or_create(config.branch_id, config.lineage_key_dir)
    signature = OwnerDecisions(config.ledger_url).decide(job, decision, reason, signer)
    lineage = LineageStore(config.lineage_url)
    try:
        lineage.append(LineageEvent(kind=EventKind.JOB_DECISION, actor=config.branch_id, job_id=job.job_id,
                                    purpose=job.purpose, dataset=config.dataset,
                                    details={"decision": decision, "reason": reason, "spec_hash": job.spec_hash(),
                                             "signature": signature}), signer)
    finally:
        lineage.close()
    return signature
