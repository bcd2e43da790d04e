"""Public calendar facts the global model reads: month numbers and Lunar New Year.

A month number counts months since 1970-01 (numpy's datetime64[M] unit), so "the month
after" is +1 across year ends. Lunar New Year moves between January and February and moves
car sales in China and Korea; its dates are public, so every node can flag its own months.
Pure, no I/O.
"""

from __future__ import annotations

from datetime import date

LUNAR_NEW_YEAR: tuple[date, ...] = (
    date(2016, 2, 8), date(2017, 1, 28), date(2018, 2, 16), date(2019, 2, 5),
    date(2020, 1, 25), date(2021, 2, 12), date(2022, 2, 1), date(2023, 1, 22),
    date(2024, 2, 10), date(2025, 1, 29), date(2026, 2, 17), date(2027, 2, 6),
    date(2028, 1, 26), date(2029, 2, 13), date(2030, 2, 3), date(2031, 1, 23),
)  # fmt: skip


def month_number(d: date) -> int:
    """Months since 1970-01."""
    return (d.year - 1970) * 12 + d.month - 1


def month_date(number: int) -> date:
    """The first day of a month number (the inverse of `month_number`)."""
    year, month = divmod(number, 12)
    return date(1970 + year, month + 1, 1)


def parse_month(label: str) -> int:
    """'YYYY-MM' -> its month number."""
    year, month = label.split("-")
    return month_number(date(int(year), int(month), 1))


def calendar_month(number: int) -> int:
    """1-12."""
    return number % 12 + 1


LNY_MONTHS = frozenset(month_number(d) for d in LUNAR_NEW_YEAR)
