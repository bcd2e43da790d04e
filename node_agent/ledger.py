"""The node's privacy ledger: the branch's budget per dataset, and every job's spend against it.

A SQLite database in the node's `privacy/` directory (any SQLAlchemy URL works), so totals
survive restarts and every round's ClientApp process sees the same books. Jobs compose by
sequential composition: their epsilons (and deltas) add up. A running job counts at the
larger of what it planned and what it has spent, so two jobs cannot both reserve the last of
a budget. The rules are pure functions (`remaining`, `preflight`, `round_allowed`); the class
only reads and writes rows.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine, insert, select, update

from common.db import tune_sqlite, writer
from lineage.models import format_time

Status = Literal["running", "complete", "stopped"]

metadata = MetaData()
spends_table = Table(
    "privacy_spends", metadata,
    Column("dataset", String(256), primary_key=True), Column("job_id", String(128), primary_key=True),
    Column("accountant", String(8), nullable=False), Column("delta", Float, nullable=False),
    Column("noise_multiplier", Float, nullable=False), Column("sample_rate", Float, nullable=False),
    Column("planned_steps", Integer, nullable=False), Column("planned_epsilon", Float, nullable=False),
    Column("history", Text, nullable=False), Column("epsilon", Float, nullable=False),
    Column("status", String(16), nullable=False), Column("reason", Text), Column("updated_at", String(32), nullable=False),
)
budgets_table = Table(
    "privacy_budgets", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True), Column("dataset", String(256), nullable=False),
    Column("epsilon", Float, nullable=False), Column("delta", Float, nullable=False), Column("set_at", String(32), nullable=False),
)


class Budget(BaseModel):
    """What a data owner allows one dataset to spend, over all jobs."""

    epsilon: float = Field(gt=0, le=1000)
    delta: float = Field(gt=0, lt=1)


class JobSpend(BaseModel):
    """One job's privacy at this node: its plan, the accountant's history, what it has spent."""

    dataset: str
    job_id: str
    accountant: str
    delta: float
    noise_multiplier: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1)
    planned_steps: int = Field(ge=0)
    planned_epsilon: float = Field(ge=0)
    history: list[list[float]] = Field(default_factory=list)
    epsilon: float = 0.0
    status: Status = "running"
    reason: str | None = None

    @property
    def committed_epsilon(self) -> float:
        return max(self.epsilon, self.planned_epsilon) if self.status == "running" else self.epsilon

    def accountant_state(self) -> dict[str, Any] | None:
        if not self.history:
            return None
        return {"history": [tuple(h) for h in self.history], "mechanism": self.accountant}


class Standing(BaseModel):
    """A dataset's budget and what is committed against it."""

    dataset: str
    budget: Budget
    committed_epsilon: float
    committed_delta: float

    @property
    def remaining_epsilon(self) -> float:
        return self.budget.epsilon - self.committed_epsilon

    @property
    def remaining_delta(self) -> float:
        return self.budget.delta - self.committed_delta


class BudgetRefusal(Exception):
    """The job would spend more privacy than the dataset has left; one line, with the numbers."""


def standing(dataset: str, budget: Budget, spends: list[JobSpend], *, excluding: str | None = None) -> Standing:
    others = [s for s in spends if s.job_id != excluding]
    return Standing(dataset=dataset, budget=budget, committed_epsilon=sum(s.committed_epsilon for s in others),
                    committed_delta=sum(s.delta for s in others))


def preflight(plan: JobSpend, budget: Budget, spends: list[JobSpend]) -> None:
    """Refuse a new job whose planned spend does not fit what the dataset has left."""
    now = standing(plan.dataset, budget, spends, excluding=plan.job_id)
    if plan.planned_epsilon > now.remaining_epsilon + 1e-9:
        raise BudgetRefusal(
            f"privacy budget: job {plan.job_id} plans ε = {plan.planned_epsilon:.3g} but dataset {plan.dataset} has "
            f"{max(now.remaining_epsilon, 0):.3g} of {budget.epsilon:g} left"
        )
    if plan.delta > now.remaining_delta + 1e-15:
        raise BudgetRefusal(
            f"privacy budget: job {plan.job_id} needs δ = {plan.delta:g} but dataset {plan.dataset} has "
            f"{max(now.remaining_delta, 0):g} of {budget.delta:g} left"
        )


def monthly_refusal(job_id: str, planned: float, recent: list[float], cap: float | None) -> str | None:
    """None if a new job planning ε = `planned` fits the node's standing rule of at most `cap`
    over the jobs admitted in the last 30 days (`recent`: what each of them commits); else why not."""
    if cap is None or planned + sum(recent) <= cap + 1e-9:
        return None
    return (f"standing rule: job {job_id} plans ε = {planned:.3g}, and the {len(recent)} jobs admitted here in the last "
            f"30 days commit {sum(recent):.3g} of the {cap:g} node.json limits.max_epsilon_per_month allows")


def round_allowed(spend: JobSpend, epsilon_after: float, budget: Budget, spends: list[JobSpend]) -> str | None:
    """None if the next round fits the job's own plan and the dataset's budget; otherwise why
    the job must stop here. The plan is a hard limit too: a coordinator that replays or adds
    rounds cannot make a job spend more than it reserved."""
    if epsilon_after > spend.planned_epsilon * 1.001 + 1e-9:
        return (f"privacy plan reached: the next round would bring job {spend.job_id} to ε = {epsilon_after:.3g}, "
                f"past the ε = {spend.planned_epsilon:.3g} it planned and reserved; training stops here")
    others = standing(spend.dataset, budget, spends, excluding=spend.job_id)
    if epsilon_after > others.remaining_epsilon + 1e-9:
        return (f"privacy budget reached: the next round would bring job {spend.job_id} to ε = {epsilon_after:.3g}, "
                f"past the {max(others.remaining_epsilon, 0):.3g} dataset {spend.dataset} has left; training stops here")
    return None


def _now() -> str:
    return format_time(datetime.now(timezone.utc))


class PrivacyLedger:
    """Reads and writes budgets and job spends."""

    def __init__(self, url: str) -> None:
        self.engine = tune_sqlite(create_engine(url))
        metadata.create_all(self.engine)

    def spends(self, dataset: str) -> list[JobSpend]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(spends_table).where(spends_table.c.dataset == dataset)).mappings().all()
        return [_spend(r) for r in rows]

    def get(self, dataset: str, job_id: str) -> JobSpend | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(spends_table).where(spends_table.c.dataset == dataset,
                                                          spends_table.c.job_id == job_id)).mappings().first()
        return _spend(row) if row else None

    def reserve(self, plan: JobSpend, budget: Budget) -> JobSpend:
        """Preflight and record the job in one transaction, so two jobs cannot both take the last of a budget."""
        with writer(self.engine) as conn:
            rows = conn.execute(select(spends_table).where(spends_table.c.dataset == plan.dataset)).mappings().all()
            spends = [_spend(r) for r in rows]
            existing = next((s for s in spends if s.job_id == plan.job_id), None)
            if existing is not None:
                return existing
            preflight(plan, budget, spends)
            conn.execute(insert(spends_table).values(**_row(plan)))
        return plan

    def record(self, spend: JobSpend) -> None:
        with writer(self.engine) as conn:
            conn.execute(update(spends_table).where(spends_table.c.dataset == spend.dataset,
                                                    spends_table.c.job_id == spend.job_id).values(**_row(spend)))

    def note_budget(self, dataset: str, budget: Budget) -> tuple[bool, Budget | None]:
        """Log the configured budget if it differs from the last one logged: (changed, previous budget)."""
        with writer(self.engine) as conn:
            last = conn.execute(select(budgets_table.c.epsilon, budgets_table.c.delta).where(budgets_table.c.dataset == dataset)
                                .order_by(budgets_table.c.id.desc()).limit(1)).first()
            if last is not None and (last[0], last[1]) == (budget.epsilon, budget.delta):
                return False, None
            conn.execute(insert(budgets_table).values(dataset=dataset, epsilon=budget.epsilon, delta=budget.delta, set_at=_now()))
        return True, (Budget(epsilon=last[0], delta=last[1]) if last is not None else None)

    def close(self) -> None:
        self.engine.dispose()


def _row(spend: JobSpend) -> dict:
    row = spend.model_dump(mode="json")
    row["history"] = json.dumps(spend.history)
    row["updated_at"] = _now()
    return row


def _spend(row) -> JobSpend:
    data = dict(row)
    data.pop("updated_at", None)
    data["history"] = json.loads(data["history"])
    return JobSpend.model_validate(data)
