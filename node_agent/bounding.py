"""Contribution bounding: how much of one customer a release may count.

Pure functions over valid sales that carry their customer's keyed hash. Each customer is
bounded from their own sales only (never from anyone else's), so removing one customer's
purchases of a year changes that year's counts by no more than `ContributionBound` allows:
the sensitivity every customer-level release is calibrated to. The customer hash is used
here and dropped; the counts are all that go on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date

import numpy as np

from common.calendar import month_number
from common.customer_privacy import ContributionBound


@dataclass(frozen=True)
class BoundedSale:
    customer: str  # the policy's keyed hash of the customer column
    sale_date: date
    order: tuple  # the tie-break between one customer's sales in one month (the contract's id order)


@dataclass(frozen=True)
class BoundingReport:
    """What bounding did, for the node's lineage (counts only; it never leaves the node)."""

    customers: int
    sales_kept: int
    sales_dropped: int
    customers_capped: int  # customers with at least one sale dropped
    most_sales_of_one_customer: int  # in one year, before bounding
    outside_window: int  # valid sales before or after the released months

    def details(self) -> dict:
        return {"customers": self.customers, "sales_kept": self.sales_kept, "sales_dropped": self.sales_dropped,
                "customers_capped": self.customers_capped,
                "most_sales_of_one_customer_in_a_year": self.most_sales_of_one_customer,
                "outside_window": self.outside_window}


def bound_contributions(sales: list[BoundedSale], bound: ContributionBound, first: date,
                        last: date) -> tuple[np.ndarray, np.ndarray, BoundingReport]:
    """(all valid sales per month, bounded sales per month, report) over the months first..last.

    A customer's sales of a year are taken in date order; a sale is counted while the customer
    has fewer than `max_sales_per_year` counted that year and fewer than `max_sales_per_month`
    that month. The rest are dropped from the bounded counts (never from the branch's own
    series, which stays on the node)."""
    start, months = month_number(first), month_number(last) - month_number(first) + 1
    raw, bounded = np.zeros(months, dtype=np.int64), np.zeros(months, dtype=np.int64)
    by_customer_year: dict[tuple[str, int], list[BoundedSale]] = defaultdict(list)
    outside = 0
    for sale in sales:
        slot = month_number(sale.sale_date) - start
        if not 0 <= slot < months:
            outside += 1
            continue
        raw[slot] += 1
        by_customer_year[(sale.customer, sale.sale_date.year)].append(sale)
    dropped, capped, most = 0, set(), 0
    for (customer, _), year_sales in by_customer_year.items():
        most = max(most, len(year_sales))
        per_month: dict[int, int] = defaultdict(int)
        counted = 0
        for sale in sorted(year_sales, key=lambda s: (s.sale_date, s.order)):
            slot = month_number(sale.sale_date) - start
            if counted < bound.max_sales_per_year and per_month[slot] < bound.max_sales_per_month:
                bounded[slot] += 1
                per_month[slot] += 1
                counted += 1
            else:
                dropped += 1
                capped.add(customer)
    report = BoundingReport(customers=len({c for c, _ in by_customer_year}), sales_kept=int(bounded.sum()),
                            sales_dropped=dropped, customers_capped=len(capped), most_sales_of_one_customer=most,
                            outside_window=outside)
    return raw, bounded, report
