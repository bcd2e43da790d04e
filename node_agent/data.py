"""Reading a branch's sales under its policy and data contract, into a monthly series.

The only place the node agent touches the branch database. It selects only the fields the
job needs and the policy releases for this job, and treats every row as the policy says the
moment it is fetched (a VIN becomes its keyed hash, a date its month...), before the data
contract or feature building see it. Fields the policy drops are never selected, so they
never enter this process's memory.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from sqlalchemy import MetaData, Table, create_engine, inspect, select
from sqlalchemy.exc import SQLAlchemyError

from common.calendar import month_number
from common.customer_privacy import ContributionBound
from common.wire import JobSpec
from node_agent.bounding import BoundedSale, BoundingReport, bound_contributions
from node_agent.contract import (
    MAX_SALE_PRICE,
    MISSING_VALUE,
    REQUIRED_COLUMNS,
    UNTREATABLE_REASON,
    UNTREATABLE_VALUE,
    ContractViolation,
    check_columns,
    id_order,
    unusable_treatment,
    validate_sales,
)
from policies import (
    FieldDecision,
    FieldTreatmentError,
    JobRefusal,
    JobRequest,
    PolicyDocument,
    check_request,
    evaluate,
    release,
    unclassified_columns,
)

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
    decisions: list[FieldDecision] = field(default_factory=list)
    bounded: np.ndarray | None = None  # per month of `series`, at most the bound's sales of one customer counted
    bounding: BoundingReport | None = None


@dataclass(frozen=True)
class CustomerBounding:
    """What a node with customer-level privacy asks of a read: the customer column, the public
    months to count over, and the contribution bound."""

    column: str
    first: date
    last: date
    bound: ContributionBound


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
    """SHA-256 over the rows as released to the job, in a canonical order."""
    h = hashlib.sha256()
    for row in sorted(rows, key=lambda r: str(r.get("sale_id"))):
        h.update("\x1f".join(str(row.get(f)) for f in fields).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def fields_needed(target: str, table: str = "sales", *, customer_column: str | None = None) -> list[str]:
    """`table.column` names a target needs: what a job asks of every node's policy (and, on a
    node that bounds contributions per customer, the customer column)."""
    columns = [*FIELDS_FOR_TARGET[target], *([customer_column] if customer_column else [])]
    return [f"{table}.{c}" for c in columns]


def job_request(job: JobSpec, table: str = "sales", *, destination: str | None = None,
                customer_column: str | None = None) -> JobRequest:
    """What a job asks of a branch's policy: its purpose, destination, recipient and fields.
    A node passes `destination` from its own configuration (where the coordinator really
    is): the job's claim is only a request and never lifts a cross-border rule."""
    return JobRequest(job_id=job.job_id, purpose=job.purpose, destination=destination or job.destination,
                      recipient_role=job.recipient_role,
                      fields=fields_needed(job.target, table, customer_column=customer_column))


def plan_read(policy: PolicyDocument, columns: list[str], request: JobRequest, *, table: str,
              customer_column: str | None = None) -> list[FieldDecision]:
    """The policy's decision for every column, or `JobRefusal` naming file, line and field.

    Refuses on schema drift (a column the policy does not classify: the compliance officer
    must look at it first), on a requested field the policy withholds (restricted first), and
    on a treatment that leaves too little for the data contract.
    """
    drift = unclassified_columns(policy, {table: columns})
    if drift:
        more = f" (and {len(drift) - 1} more)" if len(drift) > 1 else ""
        raise JobRefusal(
            f"{policy.where(table)}: {drift[0]}: the branch database has this column and the policy does not "
            f"classify it{more} (schema drift); classify it, then the node takes jobs again"
        )
    decisions = evaluate(policy, {table: columns}, request)
    try:
        check_request(decisions, request)
    except JobRefusal as exc:
        raise JobRefusal(f"{policy.where(table)}: {exc}") from None
    for decision in decisions:
        if decision.name in request.fields:
            why = unusable_treatment(decision.field, decision.treatment, customer_column=customer_column)
            if why:
                raise JobRefusal(f"{policy.where(table)}: {decision.name}: rule {decision.rule}: {why}")
    return decisions


def read_branch_dataset(
    db_url: str, policy: PolicyDocument, request: JobRequest, *, key: bytes, target: str = "monthly_units",
    today: date | None = None, table: str = "sales", max_price: float = MAX_SALE_PRICE,
    customers: CustomerBounding | None = None,
) -> BranchDataset:
    """Check schema and policy, read the released fields, treat, validate, aggregate.

    `max_price` is the ceiling of a believable price in the branch's currency (see
    `node_agent.contract.MAX_SALE_PRICE`); prices above it are quarantined as absurd.

    With `customers`, the series counts the valid sales over its public months only, and
    `bounded` counts them again with each customer's contribution bounded (`node_agent.bounding`).

    Raises `ContractViolation` (table and column) when the dataset cannot be used and
    `JobRefusal` (policy file, line and field) when the policy does not allow the job.
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
        if customers is not None and customers.column not in columns:
            raise ContractViolation(f"table '{table}' has no column '{customers.column}', which node.json "
                                    "customer_privacy.customer_column names")
        decisions = plan_read(policy, columns, request, table=table,
                              customer_column=customers.column if customers else None)
        needed = [name.split(".", 1)[1] for name in request.fields]
        sales = Table(table, MetaData(), autoload_with=engine)
        rows: list[dict] = []
        quarantined: Counter[str] = Counter()
        fetched = 0
        with engine.connect() as conn:
            for raw in conn.execute(select(*[sales.c[n] for n in needed])).mappings():
                fetched += 1
                treated = _treat(dict(raw), decisions, table=table, key=key, quarantined=quarantined)
                if treated is not None:
                    rows.append(treated)
    finally:
        engine.dispose()
    valid, invalid = validate_sales(rows, today, max_price=max_price, customer_column=customers.column if customers else None)
    quarantined.update(invalid)
    if customers is None:
        series, bounded, bounding = monthly_units([s.sale_date for s in valid]), None, None
    else:
        sales = [BoundedSale(s.customer or "", s.sale_date, id_order(s.sale_id)) for s in valid]
        raw, bounded, bounding = bound_contributions(sales, customers.bound, customers.first, customers.last)
        series = MonthlySeries(start=customers.first, units=raw.astype(np.float64))
    return BranchDataset(
        dataset=table,
        series=series,
        bounded=bounded,
        bounding=bounding,
        fields_read=needed,
        row_count=fetched,
        valid_count=len(valid),
        content_hash=content_hash(rows, needed),
        quarantined=dict(sorted(quarantined.items())),
        decisions=decisions,
    )


def _treat(row: dict, decisions: list[FieldDecision], *, table: str, key: bytes, quarantined: Counter) -> dict | None:
    """One fetched row as the policy releases it, or None (counted) when it must be quarantined."""
    row = {k: (None if isinstance(v, str) and not v.strip() else v) for k, v in row.items()}
    if any(v is None for v in row.values()):
        quarantined[MISSING_VALUE] += 1
        return None
    if "vin" in row:
        row["vin"] = str(row["vin"]).strip().upper()  # one car, one spelling: before any keyed hash
    try:
        return release(decisions, row, table=table, key=key)
    except FieldTreatmentError as exc:
        quarantined[UNTREATABLE_REASON.get(exc.field, UNTREATABLE_VALUE)] += 1
        return None


@dataclass(frozen=True)
class HoldoutSplit:
    """Training history and the held-out months the forecast is judged on."""

    history: np.ndarray
    actual: np.ndarray
    months: list[str]
    start: int = 0  # month number (`common.calendar`) of the first history month

    @property
    def target(self) -> int:
        """Month number of the first held-out month."""
        return self.start + len(self.history)


def holdout_split(series: MonthlySeries, holdout: int, horizon: int) -> HoldoutSplit:
    """The last `holdout` months (at most `horizon` of them are judged) are never trained on."""
    units = series.units
    first = len(units) - holdout
    actual = units[first:][:horizon]
    return HoldoutSplit(
        history=units[:first],
        actual=actual,
        months=[month_label(series.start, first + i) for i in range(len(actual))],
        start=month_number(series.start),
    )
