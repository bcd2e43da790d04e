"""Reading a branch's sales under its policy and data contract, into a monthly series.

The only place the node agent touches the branch database. It selects only the fields the
job needs and the policy allows; personal fields are never selected, so they never enter
this process's memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from sqlalchemy import MetaData, Table, create_engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from node_agent.contract import REQUIRED_COLUMNS, ContractViolation, check_columns, validate_sales
from policies import Policy, PolicyDecision, Treatment, evaluate

# Fields a monthly-units forecast needs: the date to count by; VIN and prices for the contract.
FIELDS_FOR_TARGET = {"monthly_units": REQUIRED_COLUMNS["sales"]}


@dataclass(frozen=True)
class MonthlySeries:
    """Units sold per calendar month, from the first to the last month with valid sales."""

    start: date  # first day of the first month
    units: np.ndarray

    @property
    def months(self) -> list[str]:
        return [month_label(self.start, i) for i in range(len(self.units))]


@dataclass(frozen=True)
class BranchDataset:
    """What one read produced, with the facts lineage must record about it."""

    dataset: str
    series: MonthlySeries
    fields_read: list[str]
    row_count: int
    valid_count: int
    content_hash: str
    quarantined: dict[str, int] = field(default_factory=dict)
    decisions: list[PolicyDecision] = field(default_factory=list)


def month_label(start: date, offset: int) -> str:
    y, m = divmod(start.month - 1 + offset, 12)
    return f"{start.year + y:04d}-{m + 1:02d}"


def monthly_units(sale_dates: list[date]) -> MonthlySeries:
    """Count sales per month; months without sales inside the span count as zero."""
    if not sale_dates:
        return MonthlySeries(start=date(1970, 1, 1), units=np.zeros(0))
    first, last = min(sale_dates), max(sale_dates)
    n = (last.year - first.year) * 12 + last.month - first.month + 1
    units = np.zeros(n)
    for d in sale_dates:
        units[(d.year - first.year) * 12 + d.month - first.month] += 1
    return MonthlySeries(start=date(first.year, first.month, 1), units=units)


def content_hash(rows: list[dict], fields: list[str]) -> str:
    """SHA-256 over the rows exactly as read, in a canonical order."""
    h = hashlib.sha256()
    for row in sorted(rows, key=lambda r: str(r.get("sale_id"))):
        h.update("\x1f".join(str(row.get(f)) for f in fields).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def read_branch_dataset(
    db_url: str, policy: Policy, *, purpose: str, target: str = "monthly_units", today: date | None = None,
    table: str = "sales",
) -> BranchDataset:
    """Check the schema and policy, read the permitted fields, validate, aggregate.

    Raises `ContractViolation` (with table and column) when the dataset cannot be used.
    """
    today = today or date.today()
    engine = create_engine(db_url)
    try:
        try:
            columns = [c["name"] for c in inspect(engine).get_columns(table)]
        except SQLAlchemyError as exc:
            raise ContractViolation(f"cannot read table '{table}' at the branch database: {exc.__class__.__name__}") from None
        if not columns:
            raise ContractViolation(f"table '{table}' does not exist in the branch database")
        check_columns(table, columns)
        decisions = evaluate(policy, table, columns, purpose)
        by_field = {d.field: d for d in decisions}
        needed = list(FIELDS_FOR_TARGET[target])
        for name in needed:
            if by_field[name].treatment is not Treatment.ALLOW:
                raise ContractViolation(
                    f"policy '{policy.name}' v{policy.version} forbids field '{table}.{name}' "
                    f"needed for target '{target}' (rule {by_field[name].rule})"
                )
        sales = Table(table, MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(*[sales.c[n] for n in needed])).mappings()]
    finally:
        engine.dispose()
    valid, quarantined = validate_sales(rows, today)
    return BranchDataset(
        dataset=table,
        series=monthly_units([s.sale_date for s in valid]),
        fields_read=needed,
        row_count=len(rows),
        valid_count=len(valid),
        content_hash=content_hash(rows, needed),
        quarantined=dict(sorted(quarantined.items())),
        decisions=decisions,
    )


@dataclass(frozen=True)
class HoldoutSplit:
    """Training history and the held-out months the forecast is judged on."""

    history: np.ndarray
    actual: np.ndarray
    target_month: int  # calendar month (1-12) of the first held-out month
    months: list[str]


def holdout_split(series: MonthlySeries, holdout: int, horizon: int) -> HoldoutSplit:
    """The last `holdout` months (at most `horizon` of them are judged) are never trained on."""
    units = series.units
    first = len(units) - holdout
    actual = units[first:][:horizon]
    return HoldoutSplit(
        history=units[:first],
        actual=actual,
        target_month=(series.start.month - 1 + first) % 12 + 1,
        months=[month_label(series.start, first + i) for i in range(len(actual))],
    )
