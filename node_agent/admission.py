"""Admission: which jobs this node takes, and the job frozen as it was admitted.

What a job claims (purpose, destination, recipient, rounds, ε, encryption) is a request; the
node's own configuration decides (`admission_refusal`, a pure rule). The first instruction of
an accepted job freezes its spec: the node stores the spec's hash, and any later instruction
whose spec differs in anything (δ, batch size, epochs, lags, rounds, HE, DP...) is refused.
Rounds only move forward and never past the admitted job; evaluations and releases are
counted against the node's per-job caps. The books live beside the privacy ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)

from common.db import tune_sqlite, writer
from common.wire import JobSpec
from lineage.models import format_time
from node_agent.config import NodeConfig

metadata = MetaData()
admitted_table = Table(
    "admitted_jobs", metadata,
    Column("job_id", String(128), primary_key=True), Column("spec_hash", String(64), nullable=False),
    Column("spec", Text, nullable=False), Column("admitted_at", String(32), nullable=False),
    Column("last_round", Integer, nullable=False), Column("evaluations", Integer, nullable=False),
    Column("releases", Integer, nullable=False),
    Column("release_set", String(64), nullable=True),
)
sent_table = Table(  # the last update sent for each job: asked the very same round again, the node sends it again
    "sent_updates", metadata,
    Column("job_id", String(128), primary_key=True), Column("round", Integer, nullable=False),
    Column("instruction", String(64), nullable=False), Column("reply", LargeBinary, nullable=False),
)


class Refusal(Exception):
    """A job or instruction this node will not take: a refusal code and the detail (for lineage)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class Admitted(BaseModel):
    job: JobSpec
    spec_hash: str
    last_round: int = 0
    evaluations: int = 0
    releases: int = 0


def admission_refusal(job: JobSpec, config: NodeConfig, key_shape: tuple[int, int] | None) -> Refusal | None:
    """Why this node does not take `job`, judged by its own settings; None when it does.
    `key_shape` is (poly degree, scale bits) of the node's alliance key (None: not loaded)."""
    limits = config.limits
    if job.purpose not in config.accepted_purposes:
        return Refusal("purpose", f"purpose '{job.purpose}' is not in node.json accepted_purposes {config.accepted_purposes}")
    if job.recipient_role not in config.accepted_recipient_roles:
        return Refusal("recipient", f"recipient role '{job.recipient_role}' is not in node.json "
                                             f"accepted_recipient_roles {config.accepted_recipient_roles}")
    if job.destination != config.coordinator_jurisdiction:
        return Refusal("destination", f"the job claims destination {job.destination}; node.json says the "
                                               f"coordinator is in {config.coordinator_jurisdiction}")
    if config.require_he and not job.he.enabled:
        return Refusal("encryption-required", "the job turns encryption off; node.json require_he is true")
    params = job.he.params
    if job.he.enabled and key_shape is not None and (params.poly_modulus_degree, params.global_scale_bits) != key_shape:
        return Refusal("encryption-required", "the job's CKKS parameters differ from the alliance key's")
    if not job.dp.enabled and not config.accept_non_private_jobs:
        return Refusal("dp-required", "the job has no DP; node.json accept_non_private_jobs is false")
    if job.rounds > limits.max_rounds:
        return Refusal("job-limits", f"the job asks for {job.rounds} rounds; node.json limits.max_rounds is {limits.max_rounds}")
    if job.dp.enabled and job.dp.delta > limits.max_delta:
        return Refusal("job-limits", f"the job asks for δ = {job.dp.delta:g}; node.json limits.max_delta is {limits.max_delta:g}")
    if job.dp.enabled and job.dp.target_epsilon > limits.max_epsilon:
        return Refusal("job-limits", f"the job plans ε = {job.dp.target_epsilon:g}; node.json limits.max_epsilon "
                                              f"is {limits.max_epsilon:g}")
    customers = config.customer_privacy
    if customers is not None and job.customer_dp is None:
        return Refusal("customer-dp-required", "the job asks for no customer-level privacy; node.json customer_privacy "
                                               "requires it of every job")
    if customers is None and job.customer_dp is not None:
        return Refusal("customer-dp-unavailable", "the job asks for customer-level privacy; node.json has no "
                                                  "customer_privacy section to give it with")
    if customers is not None and job.customer_dp.epsilon > customers.epsilon_per_year:
        return Refusal("job-limits", f"the job asks for customer ε = {job.customer_dp.epsilon:g} per year; node.json "
                                     f"customer_privacy.epsilon_per_year is {customers.epsilon_per_year:g}")
    if job.bounds.max_weight > limits.max_weight:
        return Refusal("job-limits", f"the job lets one update weigh {job.bounds.max_weight}; node.json "
                                              f"limits.max_weight is {limits.max_weight}")
    return None


def _now() -> str:
    return format_time(datetime.now(timezone.utc))


class AdmissionBook:
    """The admitted jobs of one node and their counters; every change in one transaction."""

    def __init__(self, url: str) -> None:
        self.engine = tune_sqlite(create_engine(url))
        metadata.create_all(self.engine)

    def get(self, job_id: str) -> Admitted | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(admitted_table).where(admitted_table.c.job_id == job_id)).mappings().first()
        return _admitted(row) if row else None

    def admitted_since(self, since: datetime) -> list[Admitted]:
        """The jobs admitted at or after `since`."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(admitted_table).where(admitted_table.c.admitted_at >= format_time(since))).mappings().all()
        return [_admitted(r) for r in rows]

    def admit(self, job: JobSpec, *, max_new_per_day: int = 10_000) -> tuple[Admitted, bool]:
        """The job as admitted (frozen at its first instruction) and whether it is new here.
        Raises Refusal when an admitted job comes back with another spec, or when a new job
        would pass the node's cap of new jobs in 24 hours."""
        digest = job.spec_hash()
        with writer(self.engine) as conn:
            row = conn.execute(select(admitted_table).where(admitted_table.c.job_id == job.job_id)).mappings().first()
            if row is None:
                since = format_time(datetime.now(timezone.utc) - timedelta(days=1))
                recent = conn.execute(select(func.count()).select_from(admitted_table)
                                      .where(admitted_table.c.admitted_at >= since)).scalar_one()
                if recent >= max_new_per_day:
                    raise Refusal("job-limits", f"{recent} jobs admitted in the last 24 hours; node.json "
                                                f"limits.max_new_jobs_per_day is {max_new_per_day}")
                conn.execute(insert(admitted_table).values(
                    job_id=job.job_id, spec_hash=digest, spec=job.model_dump_json(), admitted_at=_now(),
                    last_round=0, evaluations=0, releases=0))
                return Admitted(job=job, spec_hash=digest), True
        admitted = _admitted(row)
        if admitted.spec_hash != digest:
            changed = sorted(k for k, v in job.model_dump().items() if admitted.job.model_dump()[k] != v)
            raise Refusal("job-changed", f"job {job.job_id} was admitted with spec {admitted.spec_hash[:12]}; "
                                                  f"this instruction changes {', '.join(changed)}")
        return admitted, False

    def take_round(self, job_id: str, rnd: int) -> None:
        """Claim training round `rnd`: it must come after the last one taken and within the job."""
        with writer(self.engine) as conn:
            row = conn.execute(select(admitted_table).where(admitted_table.c.job_id == job_id)).mappings().one()
            admitted = _admitted(row)
            if rnd > admitted.job.rounds:
                raise Refusal("replay", f"round {rnd} is past the {admitted.job.rounds} rounds admitted")
            if rnd <= admitted.last_round:
                raise Refusal("replay", f"round {rnd} again: round {admitted.last_round} was already taken")
            conn.execute(update(admitted_table).where(admitted_table.c.job_id == job_id).values(last_round=rnd))

    def keep_sent(self, job_id: str, rnd: int, instruction: str, reply: bytes) -> None:
        """Keep the signed update sent for round `rnd` (replacing the previous round's)."""
        with writer(self.engine) as conn:
            conn.execute(delete(sent_table).where(sent_table.c.job_id == job_id))
            conn.execute(insert(sent_table).values(job_id=job_id, round=rnd, instruction=instruction, reply=reply))

    def sent(self, job_id: str, rnd: int, instruction: str) -> bytes | None:
        """The update sent for this very instruction (same job, round and starting model), if
        it was the last one sent: a coordinator that lost it (it crashed mid-round) gets the
        same bytes again, at no new privacy cost and with nothing new in them."""
        with self.engine.connect() as conn:
            row = conn.execute(select(sent_table).where(sent_table.c.job_id == job_id, sent_table.c.round == rnd,
                                                        sent_table.c.instruction == instruction)).first()
        return row.reply if row else None

    def take(self, job_id: str, counter: str, cap: int) -> int:
        """Count one more evaluation or release against `cap`; returns the new count."""
        column = admitted_table.c[counter]
        with writer(self.engine) as conn:
            used = conn.execute(select(column).where(admitted_table.c.job_id == job_id)).scalar_one()
            if used >= cap:
                raise Refusal("evaluation-limit", f"job {job_id} has used its {cap} {counter} at this node")
            conn.execute(update(admitted_table).where(admitted_table.c.job_id == job_id).values({counter: used + 1}))
        return used + 1

    def commit_release_set(self, job_id: str, set_digest: str) -> None:
        """Agree to the one contributor set this job's metrics may be released over."""
        with writer(self.engine) as conn:
            held = conn.execute(select(admitted_table.c.release_set).where(admitted_table.c.job_id == job_id)).scalar_one()
            if held is not None and held != set_digest:
                raise Refusal("aggregate-rejected", f"this node already agreed to another contributor set for job {job_id} "
                                                    f"({held[:12]}); one set per job")
            conn.execute(update(admitted_table).where(admitted_table.c.job_id == job_id).values(release_set=set_digest))

    def release_set(self, job_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(admitted_table.c.release_set).where(admitted_table.c.job_id == job_id)).scalar_one_or_none()

    def close(self) -> None:
        self.engine.dispose()


def _admitted(row) -> Admitted:
    return Admitted(job=JobSpec.model_validate_json(row["spec"]), spec_hash=row["spec_hash"], last_round=row["last_round"],
                    evaluations=row["evaluations"], releases=row["releases"])
