"""The data contract: what a branch database must look like before any job may use it.

A missing required column refuses the job. Rows with impossible values are quarantined,
counted per reason, and never used or sent; nothing is dropped silently.

Validation runs on rows *after* the branch policy has treated them, so it accepts the
treated forms a policy may ask for: a date generalised to its month, a price generalised to
a bucket, a VIN replaced by its keyed hash. `unusable_treatment` says which treatments leave
too little for the contract to check (a VIN masked to its last digits cannot find duplicates).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date

from policies import TreatmentSpec

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sales": ("sale_id", "sale_date", "vin", "list_price", "sale_price"),
}

# Quarantine reasons, in the order they are checked.
UNPARSEABLE_DATE = "unparseable_date"
FUTURE_SALE_DATE = "future_sale_date"
NEGATIVE_PRICE = "negative_price"
UNPARSEABLE_PRICE = "unparseable_price"
NON_FINITE_PRICE = "non_finite_price"  # NaN or an infinity: the text 'NaN', 'nan', 'inf', '-Infinity'... or the float
ABSURD_PRICE = "absurd_price"  # above MAX_SALE_PRICE
MISSING_VALUE = "missing_value"
DUPLICATE_VIN = "duplicate_vin"
UNTREATABLE_VALUE = "untreatable_value"
QUARANTINE_REASONS = (MISSING_VALUE, UNPARSEABLE_DATE, FUTURE_SALE_DATE, UNPARSEABLE_PRICE, NON_FINITE_PRICE,
                      NEGATIVE_PRICE, ABSURD_PRICE, DUPLICATE_VIN, UNTREATABLE_VALUE)

# The ceiling of a believable car sale or list price, in the branch's own currency unit: ten
# million. The simulated catalogue (sovereign/simulation/dealers.py) lists about 21,500 to
# 60,000 (model year 2020, rising 1.5% a year), far below it; a careless DMS export's 1e12,
# 9.99e99 or 2**63 placeholder is far above it. A branch that prices in a currency with small
# units (won, or yen for luxury cars) passes its own ceiling (`max_price`).
MAX_SALE_PRICE = 10_000_000.0

# The quarantine reason of a row whose value in this column its treatment could not handle.
UNTREATABLE_REASON = {"sale_date": UNPARSEABLE_DATE, "list_price": UNPARSEABLE_PRICE, "sale_price": UNPARSEABLE_PRICE}

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
# A bucket `low-high` as `generalise_number` writes it (`45000-50000`, `1e+12-1e+12`), and as it
# writes a NaN or infinite price (`nan-nan`): the bounds are parsed, never trusted, and checked
# like a price (finite, not negative, not absurd).
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_BUCKET = re.compile(rf"^({_NUMBER})-({_NUMBER})$", re.IGNORECASE)


class ContractViolation(ValueError):
    """The dataset cannot be used at all (e.g. a required column is missing)."""


@dataclass(frozen=True)
class ValidSale:
    sale_id: str  # for ordering only; may be a keyed hash
    sale_date: date  # the first of the month when the policy generalised dates to the month
    vin: str  # or its keyed hash: equal VINs give equal hashes
    customer: str | None = None  # the customer's keyed hash, when the node bounds contributions per customer


def id_order(sale_id: str) -> tuple[int, int | str]:
    """Numeric ids in number order, hashed ids after them in text order."""
    return (0, int(sale_id)) if sale_id.isdigit() else (1, sale_id)


def unusable_treatment(column: str, spec: TreatmentSpec, *, customer_column: str | None = None) -> str | None:
    """Why the contract cannot work with `column` treated as `spec`, or None when it can."""
    if spec.kind == "allow":
        return None
    if column == customer_column:
        return None if spec.kind == "hash" else (
            f"customer-level privacy needs the customer or its keyed hash, to bound what one customer counts; "
            f"'{spec.describe()}' leaves too little")
    if column == "sale_date" and spec.kind == "generalise" and spec.to == "month":
        return None
    if column in ("vin", "sale_id") and spec.kind == "hash":
        return None
    if column in ("list_price", "sale_price") and spec.kind == "generalise" and spec.to == "bucket":
        return None
    needs = {
        "sale_date": "the day or month of each sale",
        "vin": "the VIN or its keyed hash, to find duplicate sales",
        "sale_id": "a row identity (raw or keyed hash)",
    }.get(column, "a number or a price bucket, to check prices")
    return f"a monthly forecast needs {needs}; '{spec.describe()}' leaves too little"


def parse_sale_date(value: object) -> date:
    """A full ISO date, or a month `YYYY-MM` (read as its first day). Raises ValueError."""
    text = str(value)
    month = _MONTH.match(text)
    if month:
        return date(int(month[1]), int(month[2]), 1)
    return date.fromisoformat(text)


def price_floor(value: object) -> float:
    """A price, or the lower bound of a price bucket `low-high`. Raises ValueError."""
    return price_bounds(value)[0]


def price_bounds(value: object) -> tuple[float, float]:
    """(price, price) for a price, (low, high) for a price bucket `low-high`. Raises ValueError
    (or TypeError) when it is neither; NaN and infinities are returned, for `price_problem`."""
    if isinstance(value, str):
        bucket = _BUCKET.match(value.strip())
        if bucket:
            low, high = float(bucket[1]), float(bucket[2])
            if low > high:
                raise ValueError("a price bucket whose bounds are reversed")
            return low, high
    price = float(value)
    return price, price


def price_problem(value: object, max_price: float = MAX_SALE_PRICE) -> str | None:
    """The quarantine reason of a price (or price bucket), or None when it is believable.

    Unparseable first, then NaN or infinite (either bound of a bucket), negative, and above
    `max_price`. A bucket is judged by its lower bound: the policy hid the price inside it.
    """
    try:
        low, high = price_bounds(value)
    except OverflowError:  # an integer too large for a float
        return ABSURD_PRICE
    except (TypeError, ValueError):
        return UNPARSEABLE_PRICE
    if not (math.isfinite(low) and math.isfinite(high)):
        return NON_FINITE_PRICE
    if low < 0:
        return NEGATIVE_PRICE
    if low > max_price:
        return ABSURD_PRICE
    return None


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


def validate_sales(rows: list[dict], today: date, *, max_price: float = MAX_SALE_PRICE,
                   customer_column: str | None = None) -> tuple[list[ValidSale], Counter[str]]:
    """Split rows into valid sales and quarantine counts per reason.

    A row with two bad prices counts once, under the first reason in `QUARANTINE_REASONS`.
    Duplicate VINs keep the earliest sale (by date, then id) and quarantine the rest. With a
    `customer_column`, a duplicate is the same VIN for the same customer: whether one
    customer's sale counts then never depends on another customer's rows, which is what
    bounds what removing one customer can change.
    """
    quarantined: Counter[str] = Counter()
    candidates: list[ValidSale] = []
    for row in rows:
        if any(row.get(c) is None or row.get(c) == "" for c in ("sale_date", "vin", "sale_price", "list_price")):
            quarantined[MISSING_VALUE] += 1
            continue
        try:
            sold = parse_sale_date(row["sale_date"])
        except ValueError:
            quarantined[UNPARSEABLE_DATE] += 1
            continue
        if sold > today:
            quarantined[FUTURE_SALE_DATE] += 1
            continue
        problems = {price_problem(row[c], max_price) for c in ("sale_price", "list_price")} - {None}
        if problems:
            quarantined[min(problems, key=QUARANTINE_REASONS.index)] += 1
            continue
        customer = str(row[customer_column]) if customer_column else None
        candidates.append(ValidSale(str(row["sale_id"]), sold, str(row["vin"]).strip().upper(), customer))
    candidates.sort(key=lambda s: (s.sale_date, id_order(s.sale_id)))
    seen: set[tuple[str | None, str]] = set()
    valid = []
    for sale in candidates:
        if (sale.customer, sale.vin) in seen:
            quarantined[DUPLICATE_VIN] += 1
            continue
        seen.add((sale.customer, sale.vin))
        valid.append(sale)
    return valid, quarantined
