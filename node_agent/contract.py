"""The data contract: what a branch database must look like before any job may use it.

A missing required column refuses the job. Rows with impossible values are quarantined,
counted per reason, and never used or sent; nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sales": ("sale_id", "sale_date", "vin", "list_price", "sale_price"),
}

# Quarantine reasons, in the order they are checked.
UNPARSEABLE_DATE = "unparseable_date"
FUTURE_SALE_DATE = "future_sale_date"
NEGATIVE_PRICE = "negative_price"
UNPARSEABLE_PRICE = "unparseable_price"
MISSING_VALUE = "missing_value"
DUPLICATE_VIN = "duplicate_vin"


class ContractViolation(ValueError):
    """The dataset cannot be used at all (e.g. a required column is missing)."""


@dataclass(frozen=True)
class ValidSale:
    sale_id: int
    sale_date: date
    vin: str


def check_columns(table: str, present: list[str]) -> None:
    """Raise naming table and column when a required column is absent."""
    if table not in REQUIRED_COLUMNS:
        raise ContractViolation(f"table '{table}' has no data contract")
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in present]
    if missing:
        raise ContractViolation(
            f"table '{table}' is missing required column '{missing[0]}'"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )


def validate_sales(rows: list[dict], today: date) -> tuple[list[ValidSale], Counter[str]]:
    """Split rows into valid sales and quarantine counts per reason.

    Duplicate VINs keep the earliest sale (by date, then id) and quarantine the rest.
    """
    quarantined: Counter[str] = Counter()
    candidates: list[ValidSale] = []
    for row in rows:
        if any(row.get(c) is None or row.get(c) == "" for c in ("sale_date", "vin", "sale_price", "list_price")):
            quarantined[MISSING_VALUE] += 1
            continue
        try:
            sold = date.fromisoformat(str(row["sale_date"]))
        except ValueError:
            quarantined[UNPARSEABLE_DATE] += 1
            continue
        if sold > today:
            quarantined[FUTURE_SALE_DATE] += 1
            continue
        try:
            prices = (float(row["sale_price"]), float(row["list_price"]))
        except (TypeError, ValueError):
            quarantined[UNPARSEABLE_PRICE] += 1
            continue
        if min(prices) < 0:
            quarantined[NEGATIVE_PRICE] += 1
            continue
        candidates.append(ValidSale(int(row["sale_id"]), sold, str(row["vin"]).strip().upper()))
    candidates.sort(key=lambda s: (s.sale_date, s.sale_id))
    seen: set[str] = set()
    valid = []
    for sale in candidates:
        if sale.vin in seen:
            quarantined[DUPLICATE_VIN] += 1
            continue
        seen.add(sale.vin)
        valid.append(sale)
    return valid, quarantined
