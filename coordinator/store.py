"""The coordinator's store: nodes, accounts, jobs and their steps; SQLite by default, any SQLAlchemy URL.

The schema is created and upgraded by Alembic (`coordinator/migrations`, its own version
table, so the store can share a database with a lineage store). A state change is a
compare-and-set on the state it leaves, inside one transaction with the step it records, so
two requests racing to move a job cannot both win, and no state exists without its step.
Tokens are stored only as their SHA-256: a leaked database holds no credential.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from common.db import tune_sqlite, upgrade_schema, writer
from common.wire import JobSpec
from coordinator.lifecycle import Decision, JobState
from coordinator.resources import Account, JobRecord, JobStep, NodeAnswer, NodeRecord, Role, RoundRecord, now

SCHEMA_REVISION = "0002_rounds"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "coordinator_alembic_version"

metadata = MetaData()
nodes_table = Table(
    "coordinator_nodes", metadata,
    Column("node_id", String(64), primary_key=True), Column("public_key", Text), Column("region", String(64)),
    Column("country", String(2)), Column("policy_summary", Text), Column("registered_at", String(32)),
    Column("last_seen", String(32)), Column("revoked", Boolean),
)
accounts_table = Table(
    "coordinator_accounts", metadata,
    Column("name", String(64), primary_key=True), Column("role", String(32)), Column("scope", String(64)),
    Column("token_hash", String(64)), Column("created_at", String(32)), Column("revoked", Boolean),
)
jobs_table = Table(
    "coordinator_jobs", metadata,
    Column("job_id", String(64), primary_key=True), Column("spec", Text), Column("spec_hash", String(64)),
    Column("state", String(16)), Column("min_contributors", Integer), Column("created_by", String(64)),
    Column("created_at", String(32)), Column("updated_at", String(32)), Column("results", Text),
)
steps_table = Table(
    "coordinator_job_steps", metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("job_id", String(64)), Column("state", String(16)), Column("reason", Text), Column("actor", String(64)),
    Column("at", String(32)),
)
job_nodes_table = Table(
    "coordinator_job_nodes", metadata,
    Column("job_id", String(64), primary_key=True), Column("node_id", String(64), primary_key=True),
    Column("decision", String(16)), Column("reason", Text), Column("signature", String(128)),
    Column("decided_at", String(32)),
)

rounds_table = Table(
    "coordinator_job_rounds", metadata,
    Column("job_id", String(64), primary_key=True), Column("round", Integer, primary_key=True, autoincrement=False),
    Column("contributors", Text), Column("refused", Text), Column("node_level_epsilon", Float), Column("seconds", Float),
    Column("closed_at", String(32)),
)


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says why in one line."""


class Conflict(StoreError):
    """The write lost to another: a name already taken, a state already left."""


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it is there)."""
    upgrade_schema(engine, str(MIGRATIONS), VERSION_TABLE, SCHEMA_REVISION)


class CoordinatorStore:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self._engine = tune_sqlite(create_engine(url, pool_pre_ping=not url.startswith("sqlite")))
        try:
            upgrade(self._engine)
        except OperationalError as exc:
            raise StoreError(f"{url}: cannot open the coordinator store ({exc.orig})") from None

    def close(self) -> None:
        self._engine.dispose()

    # --- nodes -------------------------------------------------------------------------
    def add_node(self, node: NodeRecord) -> NodeRecord:
        row = {**node.model_dump(), "policy_summary": json.dumps(node.policy_summary, sort_keys=True)}
        self._insert(nodes_table, row, f"node {node.node_id} is already registered")
        return node

    def node(self, node_id: str) -> NodeRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(nodes_table).where(nodes_table.c.node_id == node_id)).mappings().first()
        return _node(row) if row else None

    def nodes(self, *, region: str | None = None) -> list[NodeRecord]:
        query = select(nodes_table).order_by(nodes_table.c.node_id)
        if region is not None:
            query = query.where(nodes_table.c.region == region)
        with self._engine.connect() as conn:
            return [_node(r) for r in conn.execute(query).mappings()]

    def touch_node(self, node_id: str) -> None:
        with writer(self._engine) as conn:
            conn.execute(update(nodes_table).where(nodes_table.c.node_id == node_id).values(last_seen=now()))

    # --- accounts ------------------------------------------------------------------------
    def add_account(self, account: Account, token_hash: str) -> Account:
        self._insert(accounts_table, {**account.model_dump(), "role": account.role.value, "token_hash": token_hash},
                     f"account {account.name} already exists")
        return account

    def account_by_token(self, token_hash: str) -> Account | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(accounts_table).where(accounts_table.c.token_hash == token_hash)).mappings().first()
        if row is None:
            return None
        return Account(name=row["name"], role=Role(row["role"]), scope=row["scope"], created_at=row["created_at"],
                       revoked=bool(row["revoked"]))

    def accounts(self) -> list[Account]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(accounts_table).order_by(accounts_table.c.name)).mappings().all()
        return [Account(name=r["name"], role=Role(r["role"]), scope=r["scope"], created_at=r["created_at"],
                        revoked=bool(r["revoked"])) for r in rows]

    def revoke_account(self, name: str) -> bool:
        with writer(self._engine) as conn:
            return conn.execute(update(accounts_table).where(accounts_table.c.name == name).values(revoked=True)).rowcount > 0

    # --- rounds --------------------------------------------------------------------------
    def record_round(self, job_id: str, report: RoundRecord) -> bool:
        """Keep one closed round (once: a round reported again is left as first kept); True if new."""
        row = {"job_id": job_id, "round": report.round, "contributors": json.dumps(report.contributors),
               "refused": json.dumps(report.refused, sort_keys=True), "node_level_epsilon": report.node_level_epsilon,
               "seconds": report.seconds, "closed_at": report.closed_at or now()}
        try:
            with writer(self._engine) as conn:
                conn.execute(insert(rounds_table).values(**row))
        except IntegrityError:
            return False
        return True

    def rounds(self, job_id: str) -> list[RoundRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(rounds_table).where(rounds_table.c.job_id == job_id)
                                .order_by(rounds_table.c.round)).mappings().all()
        return [RoundRecord(round=r["round"], contributors=json.loads(r["contributors"]), refused=json.loads(r["refused"]),
                            node_level_epsilon=r["node_level_epsilon"], seconds=r["seconds"], closed_at=r["closed_at"])
                for r in rows]

    # --- jobs ----------------------------------------------------------------------------
    def create_job(self, spec: JobSpec, *, nodes: list[str], min_contributors: int, actor: str, reason: str) -> JobRecord:
        at = now()
        try:
            with writer(self._engine) as conn:
                conn.execute(insert(jobs_table).values(
                    job_id=spec.job_id, spec=spec.model_dump_json(), spec_hash=spec.spec_hash(), state=JobState.DRAFT.value,
                    min_contributors=min_contributors, created_by=actor, created_at=at, updated_at=at, results=None))
                conn.execute(insert(steps_table).values(job_id=spec.job_id, state=JobState.DRAFT.value, reason=reason,
                                                        actor=actor, at=at))
                for node in nodes:
                    conn.execute(insert(job_nodes_table).values(job_id=spec.job_id, node_id=node,
                                                                decision=Decision.PENDING.value))
        except IntegrityError:
            raise Conflict(f"job {spec.job_id} already exists") from None
        return self.job(spec.job_id)

    def job(self, job_id: str) -> JobRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(jobs_table).where(jobs_table.c.job_id == job_id)).mappings().first()
            if row is None:
                return None
            steps = conn.execute(select(steps_table).where(steps_table.c.job_id == job_id)
                                 .order_by(steps_table.c.id)).mappings().all()
            answers = conn.execute(select(job_nodes_table).where(job_nodes_table.c.job_id == job_id)
                                   .order_by(job_nodes_table.c.node_id)).mappings().all()
        return JobRecord(
            job_id=row["job_id"], spec=JobSpec.model_validate_json(row["spec"]), spec_hash=row["spec_hash"],
            state=JobState(row["state"]), min_contributors=row["min_contributors"], created_by=row["created_by"],
            created_at=row["created_at"], updated_at=row["updated_at"],
            results=json.loads(row["results"]) if row["results"] else None,
            steps=[JobStep(state=JobState(s["state"]), reason=s["reason"], actor=s["actor"], at=s["at"]) for s in steps],
            nodes=[NodeAnswer(node_id=a["node_id"], decision=Decision(a["decision"]), reason=a["reason"],
                              signature=a["signature"], decided_at=a["decided_at"]) for a in answers],
        )

    def jobs(self, *, state: JobState | None = None, node: str | None = None) -> list[JobRecord]:
        query = select(jobs_table.c.job_id).order_by(jobs_table.c.created_at)
        if state is not None:
            query = query.where(jobs_table.c.state == state.value)
        if node is not None:
            query = query.where(jobs_table.c.job_id.in_(
                select(job_nodes_table.c.job_id).where(job_nodes_table.c.node_id == node)))
        with self._engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        return [job for job in (self.job(i) for i in ids) if job is not None]

    def move(self, job_id: str, source: JobState, target: JobState, *, reason: str, actor: str,
             results: dict | None = None) -> None:
        """`source` → `target` with its step, or Conflict when the job is no longer in `source`."""
        at = now()
        values = {"state": target.value, "updated_at": at}
        if results is not None:
            values["results"] = json.dumps(results, sort_keys=True)
        with writer(self._engine) as conn:
            moved = conn.execute(update(jobs_table).where(jobs_table.c.job_id == job_id,
                                                          jobs_table.c.state == source.value).values(**values)).rowcount
            if not moved:
                raise Conflict(f"job {job_id} is no longer {source.value}")
            conn.execute(insert(steps_table).values(job_id=job_id, state=target.value, reason=reason, actor=actor, at=at))

    def decide(self, job_id: str, node_id: str, decision: Decision, *, reason: str, signature: str) -> None:
        """Record a node's first answer; Conflict when it had already answered."""
        with writer(self._engine) as conn:
            done = conn.execute(update(job_nodes_table).where(
                job_nodes_table.c.job_id == job_id, job_nodes_table.c.node_id == node_id,
                job_nodes_table.c.decision == Decision.PENDING.value,
            ).values(decision=decision.value, reason=reason, signature=signature, decided_at=now())).rowcount
            if not done:
                raise Conflict(f"node {node_id} has already answered job {job_id}")

    def _insert(self, table: Table, row: dict, taken: str) -> None:
        try:
            with writer(self._engine) as conn:
                conn.execute(insert(table).values(**row))
        except IntegrityError:
            raise Conflict(taken) from None


def _node(row) -> NodeRecord:
    return NodeRecord(node_id=row["node_id"], public_key=row["public_key"], region=row["region"], country=row["country"],
                      policy_summary=json.loads(row["policy_summary"] or "{}"), registered_at=row["registered_at"],
                      last_seen=row["last_seen"], revoked=bool(row["revoked"]))
