"""The node's customer ledger: every job's customer-level release, charged year by year.

Beside the window-level ledger, in the same database. A job reserves its noise multiplier
against every calendar year its months touch, in one transaction with the check that each
of those years stays within the node's yearly customer budget once composed (RDP, by
`common.customer_privacy.yearly_refusal`): before any data is read. The release itself is
kept with the job, so every round and evaluation of the job reads the same noisy counts and
the job spends its ε once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine, insert, select

from common.customer_privacy import composed_epsilon, yearly_refusal
from common.db import tune_sqlite, writer
from lineage.models import format_time
from node_agent.ledger import BudgetRefusal
from node_agent.release import CustomerRelease

metadata = MetaData()
charges_table = Table(
    "customer_charges", metadata,
    Column("dataset", String(256), primary_key=True), Column("job_id", String(128), primary_key=True),
    Column("year", Integer, primary_key=True), Column("noise_multiplier", Float, nullable=False),
    Column("delta", Float, nullable=False), Column("reserved_at", String(32), nullable=False),
)
releases_table = Table(
    "customer_releases", metadata,
    Column("dataset", String(256), primary_key=True), Column("job_id", String(128), primary_key=True),
    Column("release", Text, nullable=False), Column("made_at", String(32), nullable=False),
)


class CustomerLedger:
    """Reads and writes yearly charges and the releases they paid for."""

    def __init__(self, url: str) -> None:
        self.engine = tune_sqlite(create_engine(url))
        metadata.create_all(self.engine)

    def charges(self, dataset: str) -> dict[int, list[float]]:
        """Noise multipliers of every release charged to each year."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(charges_table.c.year, charges_table.c.noise_multiplier)
                                .where(charges_table.c.dataset == dataset)).all()
        return _by_year(rows)

    def job_charge(self, dataset: str, job_id: str) -> tuple[float, list[int]] | None:
        """(noise multiplier, years) this job reserved, if it did."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(charges_table.c.year, charges_table.c.noise_multiplier).where(
                charges_table.c.dataset == dataset, charges_table.c.job_id == job_id)).all()
        return (rows[0][1], sorted(r[0] for r in rows)) if rows else None

    def reserve(self, dataset: str, job_id: str, years: list[int], multiplier: float, *, budget: float, delta: float) -> bool:
        """Charge the job's release to its years if they all stay within `budget`, in one
        transaction; True if it was charged now, False if the job was already charged.
        Raises `BudgetRefusal` (one line, naming the year) otherwise."""
        with writer(self.engine) as conn:
            rows = conn.execute(select(charges_table.c.job_id, charges_table.c.year, charges_table.c.noise_multiplier)
                                .where(charges_table.c.dataset == dataset)).all()
            if any(r[0] == job_id for r in rows):
                return False
            spent = _by_year([(year, z) for _, year, z in rows])
            why = yearly_refusal(years, multiplier, spent, budget=budget, delta=delta)
            if why:
                raise BudgetRefusal(f"job {job_id}: {why}")
            now = format_time(datetime.now(timezone.utc))
            conn.execute(insert(charges_table), [{"dataset": dataset, "job_id": job_id, "year": y, "noise_multiplier": multiplier,
                                                  "delta": delta, "reserved_at": now} for y in years])
        return True

    def standing(self, dataset: str, delta: float) -> dict[int, float]:
        """Customer ε spent so far on each year, composed."""
        return {year: composed_epsilon(zs, delta) for year, zs in sorted(self.charges(dataset).items())}

    def release(self, dataset: str, job_id: str) -> CustomerRelease | None:
        with self.engine.connect() as conn:
            text = conn.execute(select(releases_table.c.release).where(
                releases_table.c.dataset == dataset, releases_table.c.job_id == job_id)).scalar()
        return CustomerRelease.model_validate_json(text) if text else None

    def keep(self, dataset: str, release: CustomerRelease) -> CustomerRelease:
        """Store the job's release, or return the one already stored (a job has exactly one)."""
        with writer(self.engine) as conn:
            text = conn.execute(select(releases_table.c.release).where(
                releases_table.c.dataset == dataset, releases_table.c.job_id == release.job_id)).scalar()
            if text:
                return CustomerRelease.model_validate_json(text)
            conn.execute(insert(releases_table).values(dataset=dataset, job_id=release.job_id,
                                                       release=release.model_dump_json(),
                                                       made_at=format_time(datetime.now(timezone.utc))))
        return release

    def close(self) -> None:
        self.engine.dispose()


def _by_year(rows) -> dict[int, list[float]]:
    """(year, noise multiplier) rows as each year's list of multipliers."""
    spent: dict[int, list[float]] = defaultdict(list)
    for year, z in rows:
        spent[year].append(z)
    return dict(spent)
