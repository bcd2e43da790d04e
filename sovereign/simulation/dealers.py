"""Seeded, reproducible dealer-management-system (DMS) databases, one per dealership.

Branches share regional structure (trend, holiday seasonality) and the manufacturer's
calendar (model lines launched region by region months apart, alliance-wide incentive
campaigns, supply shortages), so a federated model can learn from the whole alliance, while
each branch alone has too little history -- new stores especially: they open with 6 to 12
months of data (0 to 6 left to train on after a 6-month holdout) and ramp up towards their
size over their first year or two, like the stores that opened earlier in the DMS window.

Truth, in two layers: :func:`monthly_demand` is the expected demand (size x trend x
seasonality x launch lift x campaign x ramp-up); in shortage months the manufacturer's
allocation caps what a branch can sell, so sales are ``min(demand, allocation)`` and
:func:`expected_sales` (the expected *censored* sales, what a forecast of sales is judged
against) is the oracle. Valid rows are exactly the simulated sales; a few malformed rows are
added on top so that the node agent's data contract has something to catch. Everything the
simulator puts in a calendar (launches by region, campaigns, shortages) is manufacturer
knowledge a job may carry; a branch's opening month is in its own ``branch`` table.

Everything is a pure function of ``(n_branches, seed, as_of)``: every random draw comes from
``numpy.random.default_rng`` seeded by ``(seed, branch key, stream)``, so one branch's data
does not depend on the order in which branches are generated. I/O happens only in
:func:`write_branch_db` and :func:`simulate_alliance`.
"""

from __future__ import annotations

import calendar
import json
import math
import pathlib
import zlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, model_validator

from common.calendar import LUNAR_NEW_YEAR

__all__ = [
    "BAD_ROW_KINDS",
    "BranchProfile",
    "EFFECT_MONTHS",
    "LUNAR_NEW_YEAR",
    "INCENTIVE_CAMPAIGNS",
    "MODEL_LAUNCHES",
    "SUPPLY_SHORTAGES",
    "PERSONAL_COLUMNS",
    "REGIONS",
    "SALES_COLUMNS",
    "allocation",
    "expected_sales",
    "generate_sales",
    "launch_calendar",
    "history_months",
    "monthly_demand",
    "plan_alliance",
    "ramp_up",
    "simulate_alliance",
    "write_branch_db",
]

# --------------------------------------------------------------------------- constants

SALES_COLUMNS: tuple[str, ...] = (
    "sale_id",
    "sale_date",
    "vin",
    "model",
    "trim",
    "list_price",
    "sale_price",
    "discount",
    "financing_type",
    "lead_source",
    "salesperson",
    "customer_id",
    "customer_name",
    "customer_phone",
    "customer_national_id",
    "customer_address",
    "customer_birth_date",
)
PERSONAL_COLUMNS: tuple[str, ...] = (
    "salesperson",
    "customer_id",
    "customer_name",
    "customer_phone",
    "customer_national_id",
    "customer_address",
    "customer_birth_date",
)
_REAL_COLUMNS = frozenset({"list_price", "sale_price", "discount"})

DEFAULT_AS_OF = date(2026, 10, 31)
DMS_WINDOW_START = date(2020, 1, 1)  # the DMS export window for established branches
# Demand is only defined where every holiday is known (see LUNAR_NEW_YEAR).
_FIRST_MONTH = date(2016, 1, 1)
_LAST_MONTH = date(2030, 12, 1)
_MIN_AS_OF = date(2021, 8, 31)  # so any new store (at most 12 months) opens inside the window
_MAX_AS_OF = date(2030, 12, 31)

BAD_ROW_KINDS: tuple[str, ...] = ("negative_price", "future_date", "duplicate_vin", "bad_date")
_BAD_DATE_STRINGS: tuple[str, ...] = ("2024-13-45", "31/02/2024", "n/a", "2023-02-30")
_FUTURE_YEAR = 2031

# Real Lunar New Year dates (common/calendar.py); the month containing it and the month before it move demand.

# The manufacturer's launch calendar: each line reaches the regions months apart (public
# dates head office announces). Solstice reaches half the regions inside the default
# held-out months (2026-05 to 2026-10) and the other half just before them.
MODEL_LAUNCHES: dict[str, dict[str, date]] = {
    "Aurora EV": {"Shanghai": date(2022, 9, 1), "Guangdong": date(2022, 11, 1), "Kanto": date(2023, 1, 1),
                  "Seoul Capital": date(2023, 3, 1), "Kansai": date(2023, 4, 1), "Busan": date(2023, 6, 1)},
    "Borealis": {"Kanto": date(2024, 4, 1), "Kansai": date(2024, 6, 1), "Seoul Capital": date(2024, 8, 1),
                 "Busan": date(2024, 10, 1), "Shanghai": date(2025, 1, 1), "Guangdong": date(2025, 2, 1)},
    "Solstice": {"Shanghai": date(2025, 11, 1), "Seoul Capital": date(2026, 1, 1), "Kansai": date(2026, 3, 1),
                 "Guangdong": date(2026, 6, 1), "Kanto": date(2026, 7, 1), "Busan": date(2026, 8, 1)},
}  # fmt: skip
_LAUNCH_LIFT = 0.30  # a line's launch lifts the region's demand 30 % in its first month ...
_LAUNCH_DECAY = 0.75  # ... fading by this factor a month

# Alliance-wide manufacturer incentive campaigns (public calendar): demand rises in the
# campaign month and some of it is pulled forward from the month after.
INCENTIVE_CAMPAIGNS: tuple[date, ...] = (
    date(2020, 10, 1), date(2021, 6, 1), date(2022, 2, 1), date(2022, 9, 1), date(2023, 5, 1), date(2023, 11, 1),
    date(2024, 7, 1), date(2025, 2, 1), date(2025, 9, 1), date(2026, 6, 1), date(2026, 9, 1), date(2027, 4, 1),
)  # fmt: skip
_CAMPAIGN_LIFT = 0.22
_CAMPAIGN_PULL_FORWARD = -0.08  # the month after a campaign

# Alliance-wide supply shortages (the manufacturer announces production cuts and allocates
# cars pro rata): in these months a branch can sell at most its allocation, a share of its
# expected demand, so sales are censored; demand itself is unchanged.
SUPPLY_SHORTAGES: tuple[date, ...] = (
    date(2021, 5, 1), date(2021, 6, 1), date(2021, 7, 1), date(2021, 8, 1), date(2021, 9, 1),
    date(2025, 6, 1), date(2025, 7, 1), date(2025, 8, 1),
)  # fmt: skip
_ALLOCATION_SHARE = 0.70

# A store's ramp-up: demand starts at a share of its size and closes the gap with a time
# constant of a few months (varying a little by store), so a store opened in the DMS window
# shows it in its data and a new one is in the middle of it.
_RAMP_START = 0.35
_RAMP_TAU = 5.0  # months

_TREND_REFERENCE = date(2023, 1, 1)  # base_units is the level here, mid DMS window
_NOISE_SIGMA = 0.05  # month-level lognormal noise on expected demand before Poisson
_MIN_BASE, _MAX_BASE = 6.0, 120.0
_YOUNG_SHARE = 0.2
# Established branches that moved to their current DMS inside the export window keep only
# the history since the migration (the old system's records did not come along).
_MIGRATED_SHARE = 0.5
_MIGRATION_WINDOW = (date(2020, 7, 1), date(2024, 6, 1))
_NEW_MONTHS = (6, 12)  # a new store's months of data: 0 to 6 left to train on after a 6-month holdout
# Established branches that opened inside the DMS window (history from their opening): the
# ramp-ups the alliance can learn from. They opened at least this many months before as_of.
_RECENT_SHARE = 0.3
_RECENT_OPENING_START = date(2020, 3, 1)
_RECENT_MIN_AGE = 30

# Seasonal effects: name -> (calendar month it hits, or None for the Lunar New Year ones).
EFFECT_MONTHS: dict[str, int | None] = {
    "lny_month": None,
    "pre_lny_month": None,
    "fiscal_year_end": 3,
    "pre_golden_week": 4,
    "golden_week": 5,
    "summer_dip": 8,
    "cn_golden_week": 10,
    "year_end": 12,
}
_EFFECT_NAMES: tuple[str, ...] = tuple(EFFECT_MONTHS)


@dataclass(frozen=True)
class Region:
    """A region's shared demand structure plus the flavour text for its rows."""

    country: str
    trend: float  # linear, fraction of the reference level per year
    effects: dict[str, float]  # effect name -> relative lift (+0.15 = +15 %)
    cities: tuple[str, ...]
    streets: tuple[str, ...]
    weight: float  # how often plan_alliance places a branch here


_JP_STREETS = ("Chuo-dori", "Sakura-dori", "Meiji-dori", "Showa-dori", "Aoba-dori", "Midosuji",
               "Kawaramachi-dori", "Yasukuni-dori")  # fmt: skip
_CN_STREETS = ("Zhongshan Road", "Renmin Road", "Jiefang Road", "Nanjing Road", "Huaihai Road",
               "Tianhe Road", "Binhai Avenue", "Jianshe Road")  # fmt: skip
_KR_STREETS = ("Teheran-ro", "Sejong-daero", "Gangnam-daero", "Jungang-daero", "Haeundae-ro",
               "Jongno", "Dongdaemun-ro", "Suyeong-ro")  # fmt: skip
_JP_EFFECTS = {"fiscal_year_end": 0.25, "pre_golden_week": 0.10, "golden_week": -0.10,
               "year_end": 0.15, "summer_dip": -0.08}  # fmt: skip
_CN_EFFECTS = {"lny_month": -0.35, "pre_lny_month": 0.15, "cn_golden_week": 0.10,
               "year_end": 0.15, "summer_dip": -0.08}  # fmt: skip
_KR_EFFECTS = {"lny_month": -0.20, "pre_lny_month": 0.15, "year_end": 0.15, "summer_dip": -0.08}

# Two regions per country with small differences: shared structure, not identical copies.
REGIONS: dict[str, Region] = {
    "Kanto": Region("JP", 0.01, _JP_EFFECTS, ("Tokyo", "Yokohama", "Saitama", "Chiba", "Kawasaki"),
                    _JP_STREETS, 0.20),
    "Kansai": Region("JP", -0.02, {**_JP_EFFECTS, "fiscal_year_end": 0.22, "summer_dip": -0.10},
                     ("Osaka", "Kyoto", "Kobe", "Sakai", "Nara"), _JP_STREETS, 0.15),
    "Shanghai": Region("CN", 0.05, {**_CN_EFFECTS, "lny_month": -0.30},
                       ("Shanghai", "Suzhou", "Kunshan", "Jiaxing"), _CN_STREETS, 0.18),
    "Guangdong": Region("CN", 0.06, {**_CN_EFFECTS, "lny_month": -0.40, "pre_lny_month": 0.18},
                        ("Guangzhou", "Shenzhen", "Dongguan", "Foshan", "Zhuhai"), _CN_STREETS, 0.17),
    "Seoul Capital": Region("KR", 0.03, _KR_EFFECTS, ("Seoul", "Incheon", "Suwon", "Seongnam", "Goyang"),
                            _KR_STREETS, 0.18),
    "Busan": Region("KR", -0.03, {**_KR_EFFECTS, "lny_month": -0.22, "pre_lny_month": 0.13},
                    ("Busan", "Ulsan", "Changwon", "Gimhae"), _KR_STREETS, 0.12),
}  # fmt: skip
_REGION_NAMES: tuple[str, ...] = tuple(REGIONS)

_DEALER_GROUPS = (
    "Harbour Motors", "Summit Auto", "Pacific Drive", "Lotus Motors", "Crown Auto", "Evergreen Motors",
    "Silverline Auto", "Meridian Motors", "Northstar Auto", "Bayside Motors", "Jade Auto",
    "Sunrise Motors", "Riverside Auto", "Orchid Motors", "Keystone Auto", "Cedar Motors",
)  # fmt: skip


@dataclass(frozen=True)
class CarModel:
    """One catalogue entry; the VIN fields make a VIN decodable back to model and trim."""

    name: str
    wmi: str  # world manufacturer identifier, VIN positions 1-3
    code: str  # VIN positions 4-5
    body: str  # VIN positions 7-8
    plant: str  # VIN position 11
    prices: tuple[float, float, float]  # list price for base / sport / premium, model year 2020
    weight: float  # share of sales once on the market


_CATALOGUE: tuple[CarModel, ...] = (
    CarModel("Aurora EV", "LSR", "AE", "E1", "S", (39_900.0, 45_500.0, 52_800.0), 0.15),
    CarModel("Borealis", "JSR", "BR", "V2", "K", (46_000.0, 52_500.0, 59_900.0), 0.12),
    CarModel("Cirrus", "KSR", "CR", "C1", "U", (21_500.0, 24_900.0, 28_400.0), 0.25),
    CarModel("Delta", "JSR", "DT", "S1", "T", (27_900.0, 31_500.0, 36_200.0), 0.20),
    CarModel("Ember", "KSR", "EM", "V1", "U", (29_800.0, 33_400.0, 38_900.0), 0.18),
    CarModel("Fjord", "JSR", "FJ", "V3", "K", (38_500.0, 44_200.0, 50_900.0), 0.10),
    CarModel("Solstice", "LSR", "SL", "E2", "S", (34_900.0, 39_900.0, 46_500.0), 0.12),
)
_TRIMS: tuple[str, ...] = ("base", "sport", "premium")
_TRIM_CODES = "BSP"
_TRIM_P = (0.5, 0.3, 0.2)
_PRICE_GROWTH = 0.015  # list prices rise per model year
_MAX_DISCOUNT = 0.12
_FINANCING = ("cash", "loan", "lease")
_FINANCING_P = (0.30, 0.50, 0.20)
_LEAD_SOURCES = ("walk_in", "website", "referral", "phone", "event")
_LEAD_P = (0.35, 0.30, 0.15, 0.10, 0.10)

_VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # no I, O, Q
_VIN_WEIGHTS = np.array([8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)
_VIN_VALUES = np.zeros(128, dtype=np.int64)
for _ch, _v in zip("ABCDEFGHJKLMNPRSTUVWXYZ", (1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9)):
    _VIN_VALUES[ord(_ch)] = _v
for _d in range(10):
    _VIN_VALUES[ord(str(_d))] = _d
# Model-year code (VIN position 10): the 30-year cycle without I, O, Q, U, Z, 0.
_YEAR_CODES = {y: c for y, c in zip(range(2010, 2040), "ABCDEFGHJKLMNPRSTVWXY123456789")}
_SERIAL_SPACE = 999_999

_FIRST = {
    "cn": ("Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Jun", "Hui", "Tao", "Ling", "Hao", "Xin",
           "Yong", "Mei", "Qiang", "Li", "Chen", "Yu", "Ying", "Bo"),
    "jp": ("Haruto", "Yuki", "Sota", "Aoi", "Ren", "Hina", "Takumi", "Sakura", "Kenji", "Yui",
           "Daiki", "Mio", "Hiroshi", "Emi", "Kaito", "Naoko", "Shota", "Ayaka", "Ryo", "Keiko"),
    "kr": ("Min-jun", "Seo-yeon", "Ji-ho", "Ha-eun", "Do-yun", "Ji-woo", "Seo-jun", "Su-bin",
           "Hyun-woo", "Ye-jin", "Jae-won", "Eun-ji", "Sung-min", "Yu-na", "Dong-hyun", "Hye-jin"),
    "west": ("Emma", "James", "Olivia", "Daniel", "Sophie", "Michael", "Laura", "Thomas", "Anna",
             "David", "Claire", "Lucas", "Maria", "Peter", "Hannah", "Mark"),
}  # fmt: skip
_LAST = {
    "cn": ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun",
           "Ma", "Zhu", "Hu", "Guo", "Lin", "He"),
    "jp": ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura",
           "Kobayashi", "Kato", "Yoshida", "Yamada", "Sasaki", "Matsumoto", "Inoue", "Kimura"),
    "kr": ("Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon", "Jang", "Lim", "Han", "Oh",
           "Seo", "Shin", "Kwon", "Hwang"),
    "west": ("Smith", "Clarke", "Muller", "Martin", "Brown", "Rossi", "Dubois", "Wilson", "Novak",
             "Jensen", "Taylor", "Garcia", "Schmidt", "Evans", "Moreau", "Walsh"),
}  # fmt: skip
_CULTURES: tuple[str, ...] = ("cn", "jp", "kr", "west")
_HOME_CULTURE = {"CN": "cn", "JP": "jp", "KR": "kr"}
_FAMILY_NAME_FIRST = frozenset({"cn", "jp", "kr"})
_CN_ID_PREFIXES = {"Shanghai": ("3101", "3101", "3205", "3304"), "Guangdong": ("4401", "4403", "4419", "4406", "4404")}
_MIN_BIRTH = date(1950, 1, 1)
_MAX_BIRTH = date(2004, 12, 31)
_ADULT_DAYS = 6575  # 18 years: nobody under 18 signs a car contract

_STREAM_PLAN, _STREAM_SEASON, _STREAM_SALES, _STREAM_STAFF, _STREAM_BAD, _STREAM_RAMP, _STREAM_CUSTOMERS = range(7)

# Who buys: most customers buy once; some come back (a household's second car, a later
# replacement); fleet accounts (a rental or taxi company) buy many cars a year. Drawn from
# their own stream, so adding the column changed no other value of a sale.
_REPEAT_P = 0.12  # a private sale goes to a customer who bought here before
_FLEET_P = 0.04  # a sale goes to one of the branch's fleet accounts
_SALES_PER_FLEET_ACCOUNT = 2500  # one fleet account per this many sales (at least one)


# --------------------------------------------------------------------------- profile


class BranchProfile(BaseModel):
    """What the simulator knows about one dealership; the DMS itself only sees a subset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    branch_id: str
    name: str
    region: str
    country: str
    opening_date: date
    base_units: float
    history_start: date

    @model_validator(mode="after")
    def _consistent(self) -> BranchProfile:
        """Reject profiles the demand model cannot interpret instead of silently guessing."""
        if self.region not in REGIONS:
            raise ValueError(f"unknown region {self.region!r}; known: {', '.join(REGIONS)}")
        if REGIONS[self.region].country != self.country:
            raise ValueError(f"region {self.region!r} is in {REGIONS[self.region].country}, not {self.country}")
        if not (self.base_units > 0 and math.isfinite(self.base_units)):
            raise ValueError(f"base_units must be a positive finite number, got {self.base_units}")
        if self.history_start.day != 1:
            raise ValueError(f"history_start must be the first day of a month, got {self.history_start}")
        if self.history_start < self.opening_date.replace(day=1):
            raise ValueError("history_start cannot precede the opening month")
        return self


# --------------------------------------------------------------------------- helpers


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _check_as_of(as_of: date) -> None:
    if not (_MIN_AS_OF <= as_of <= _MAX_AS_OF):
        raise ValueError(f"as_of must lie between {_MIN_AS_OF} and {_MAX_AS_OF}, got {as_of}")


def _branch_key(branch_id: str) -> int:
    """A stable integer per branch so its streams do not depend on generation order."""
    return zlib.crc32(branch_id.encode("utf-8"))


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *keys]))


def _month_index(d: date) -> int:
    """Months since 1970-01, the same unit as numpy's datetime64[M]."""
    return (d.year - 1970) * 12 + d.month - 1


def _index_to_month(i: int) -> date:
    return date(1970 + i // 12, i % 12 + 1, 1)


def _last_complete_month(as_of: date) -> int:
    """Index of the last month whose last day is <= as_of."""
    i = _month_index(as_of)
    return i if as_of.day == calendar.monthrange(as_of.year, as_of.month)[1] else i - 1


def history_months(profile: BranchProfile, as_of: date = DEFAULT_AS_OF) -> list[date]:
    """First days of the complete months the branch's DMS export covers."""
    start, end = _month_index(profile.history_start), _last_complete_month(as_of)
    return [_index_to_month(i) for i in range(start, end + 1)]


_LNY_MONTHS = np.array(sorted({_month_index(d) for d in LUNAR_NEW_YEAR}), dtype=np.int64)
_CAMPAIGN_MONTHS = np.array([_month_index(d) for d in INCENTIVE_CAMPAIGNS], dtype=np.int64)
_SHORTAGE_MONTHS = np.array([_month_index(d) for d in SUPPLY_SHORTAGES], dtype=np.int64)


def _launch_index(region: str) -> dict[str, int]:
    """Month index of each line's launch in `region` (lines not launched there are absent)."""
    return {line: _month_index(by_region[region]) for line, by_region in MODEL_LAUNCHES.items() if region in by_region}


def launch_calendar() -> list[dict[str, str]]:
    """The launch calendar as a job carries it: one ``{line, region, month}`` per line and
    region, in date order (public manufacturer knowledge)."""
    rows = [{"line": line, "region": region, "month": d.strftime("%Y-%m")}
            for line, by_region in MODEL_LAUNCHES.items() for region, d in by_region.items()]
    return sorted(rows, key=lambda r: (r["month"], r["line"], r["region"]))


def _effect_indicator(name: str, idx: np.ndarray) -> np.ndarray:
    """1.0 where the named effect applies to month index ``idx``."""
    cal_month = EFFECT_MONTHS[name]
    if cal_month is not None:
        return (idx % 12 == cal_month - 1).astype(np.float64)
    target = _LNY_MONTHS if name == "lny_month" else _LNY_MONTHS - 1
    return np.isin(idx, target).astype(np.float64)


# --------------------------------------------------------------------------- plan


def plan_alliance(n_branches: int, seed: int, as_of: date = DEFAULT_AS_OF) -> list[BranchProfile]:
    """Draw the alliance: sizes spanning > 10x, every region early, ~20 % new stores (6 to 12
    months of data), and ~30 % of the rest opened inside the DMS window (history from opening)."""
    if isinstance(n_branches, bool) or not isinstance(n_branches, (int, np.integer)):
        raise ValueError(f"n_branches must be an integer, got {n_branches!r}")
    if not 1 <= n_branches <= 999:
        raise ValueError(f"n_branches must be between 1 and 999, got {n_branches}")
    _check_seed(seed)
    _check_as_of(as_of)
    n = int(n_branches)
    rng = _rng(seed, _STREAM_PLAN)

    # Regions: a permutation first so small alliances still cover every region.
    weights = np.array([REGIONS[r].weight for r in _REGION_NAMES])
    region_idx = np.concatenate(
        [rng.permutation(len(_REGION_NAMES)), rng.choice(len(_REGION_NAMES), size=max(n, 6), p=weights / weights.sum())]
    )[:n]

    # Sizes: log-uniform, then stretched onto the full [6, 120] range so the spread is guaranteed.
    log_units = rng.uniform(math.log(_MIN_BASE), math.log(_MAX_BASE), size=n)
    if n >= 2:
        lo, hi = log_units.min(), log_units.max()
        span = (log_units - lo) / (hi - lo) if hi > lo else np.linspace(0.0, 1.0, n)
        log_units = math.log(_MIN_BASE) + span * (math.log(_MAX_BASE) - math.log(_MIN_BASE))
    base_units = np.round(np.exp(log_units), 2)

    n_young = max(round(_YOUNG_SHARE * n), 1 if n >= 5 else 0)
    young = set(rng.choice(n, size=n_young, replace=False).tolist()) if n_young else set()
    young_months = rng.integers(_NEW_MONTHS[0], _NEW_MONTHS[1] + 1, size=n)
    old_open_lo, old_open_hi = date(1995, 1, 1).toordinal(), date(2018, 12, 31).toordinal()
    old_open = rng.integers(old_open_lo, old_open_hi + 1, size=n)
    group_idx = rng.integers(0, len(_DEALER_GROUPS), size=n)
    city_u = rng.random(n)
    last_month = _last_complete_month(as_of)
    # Drawn after every other plan draw, so adding migrations left the other draws unchanged.
    migrated = rng.random(n) < _MIGRATED_SHARE
    migration = rng.integers(_month_index(_MIGRATION_WINDOW[0]), _month_index(_MIGRATION_WINDOW[1]) + 1, size=n)
    # Drawn after the migrations, for the same reason.
    recent_lo, recent_hi = _month_index(_RECENT_OPENING_START), last_month - _RECENT_MIN_AGE
    recent = (rng.random(n) < _RECENT_SHARE) & (recent_hi >= recent_lo)
    recent_open = rng.integers(recent_lo, max(recent_lo, recent_hi) + 1, size=n)

    profiles: list[BranchProfile] = []
    used_names: set[str] = set()
    for i in range(n):
        region_name = _REGION_NAMES[int(region_idx[i])]
        region = REGIONS[region_name]
        city = region.cities[int(city_u[i] * len(region.cities))]
        name = f"{_DEALER_GROUPS[int(group_idx[i])]} {city}"
        suffix = 2
        while name in used_names:  # unique names even for 999 branches
            name = f"{_DEALER_GROUPS[int(group_idx[i])]} {city} {suffix}"
            suffix += 1
        used_names.add(name)
        if i in young:
            # A new store opens on the first of a month: its history is exactly k months.
            opening = _index_to_month(last_month - int(young_months[i]) + 1)
            history_start = opening
        elif recent[i]:
            opening = _index_to_month(int(recent_open[i]))
            history_start = opening
        else:
            opening = date.fromordinal(int(old_open[i]))
            history_start = _index_to_month(int(migration[i])) if migrated[i] else DMS_WINDOW_START
        profiles.append(
            BranchProfile(
                branch_id=f"B{i + 1:03d}",
                name=name,
                region=region_name,
                country=region.country,
                opening_date=opening,
                base_units=float(base_units[i]),
                history_start=history_start,
            )
        )
    return profiles


# --------------------------------------------------------------------------- demand


def _effect_scales(profile: BranchProfile, seed: int) -> np.ndarray:
    """Branch-level strength of each named effect (0.8-1.2 x the region's)."""
    rng = _rng(seed, _branch_key(profile.branch_id), _STREAM_SEASON)
    return rng.uniform(0.8, 1.2, size=len(_EFFECT_NAMES))


def _check_months(idx: np.ndarray) -> None:
    if idx.size and (idx.min() < _month_index(_FIRST_MONTH) or idx.max() > _month_index(_LAST_MONTH)):
        raise ValueError(f"months must lie between {_FIRST_MONTH:%Y-%m} and {_LAST_MONTH:%Y-%m}")


def ramp_up(profile: BranchProfile, months: list[date], seed: int) -> np.ndarray:
    """Share of its size a store reaches in each month: ``1 - (1 - start) exp(-age / tau)``
    with age the months since its opening month (1 before it opens is irrelevant: no sales),
    tau the store's own (0.8-1.2 x _RAMP_TAU). Long-open stores are at 1."""
    _check_seed(seed)
    idx = np.array([_month_index(m) for m in months], dtype=np.int64)
    tau = _RAMP_TAU * _rng(seed, _branch_key(profile.branch_id), _STREAM_RAMP).uniform(0.8, 1.2)
    age = np.maximum(idx - _month_index(profile.opening_date), 0)
    return 1.0 - (1.0 - _RAMP_START) * np.exp(-age / tau)


def monthly_demand(profile: BranchProfile, months: list[date], seed: int) -> np.ndarray:
    """Expected demand per month: size x regional trend x seasonality x launch lift (the
    region's launches of each line) x incentive campaigns x the store's ramp-up.

    Pure and noise-free, so tests and forecasters can compare against ground truth; any day
    within a month selects that month. In shortage months sales are censored below this
    (see :func:`expected_sales`).
    """
    _check_seed(seed)
    idx = np.array([_month_index(m) for m in months], dtype=np.int64)
    _check_months(idx)
    region = REGIONS[profile.region]
    years = (idx - _month_index(_TREND_REFERENCE)) / 12.0
    level = profile.base_units * np.maximum(1.0 + region.trend * years, 0.05)

    season = np.ones(idx.shape, dtype=np.float64)
    scales = _effect_scales(profile, seed)
    for k, name in enumerate(_EFFECT_NAMES):
        lift = region.effects.get(name, 0.0) * scales[k]
        if lift:
            season *= 1.0 + lift * _effect_indicator(name, idx)

    launch = np.ones(idx.shape, dtype=np.float64)
    for launch_idx in _launch_index(profile.region).values():
        age = idx - launch_idx
        launch *= np.where(age >= 0, 1.0 + _LAUNCH_LIFT * _LAUNCH_DECAY ** np.maximum(age, 0), 1.0)
    campaign = (1.0 + _CAMPAIGN_LIFT * np.isin(idx, _CAMPAIGN_MONTHS)
                + _CAMPAIGN_PULL_FORWARD * np.isin(idx, _CAMPAIGN_MONTHS + 1))
    return level * season * launch * campaign * ramp_up(profile, months, seed)


def allocation(profile: BranchProfile, months: list[date], seed: int) -> np.ndarray:
    """The most units the manufacturer lets the branch sell each month: in shortage months
    its share of the expected demand (whole cars), elsewhere unlimited (inf)."""
    idx = np.array([_month_index(m) for m in months], dtype=np.int64)
    demand = monthly_demand(profile, months, seed)
    return np.where(np.isin(idx, _SHORTAGE_MONTHS), np.floor(_ALLOCATION_SHARE * demand), np.inf)


_NOISE_NODES, _NOISE_WEIGHTS = np.polynomial.hermite_e.hermegauss(16)
_NOISE_WEIGHTS = _NOISE_WEIGHTS / _NOISE_WEIGHTS.sum()


def expected_sales(profile: BranchProfile, months: list[date], seed: int) -> np.ndarray:
    """Expected units *sold* per month: E[min(N, allocation)] with N Poisson around the
    month's noisy demand (the lognormal month noise integrated out by Gauss-Hermite
    quadrature). Equal to :func:`monthly_demand` outside shortage months; the oracle a sales
    forecast is judged against."""
    from scipy.stats import poisson  # imported late: only the oracle needs it

    demand = monthly_demand(profile, months, seed)
    cap = allocation(profile, months, seed)
    out = demand.copy()
    for i in np.flatnonzero(np.isfinite(cap)):
        rates = demand[i] * np.exp(_NOISE_SIGMA * _NOISE_NODES - 0.5 * _NOISE_SIGMA**2)
        k = np.arange(int(cap[i]))
        # E[min(N, a)] = sum_{k < a} P(N > k), averaged over the month noise
        out[i] = float(np.sum(_NOISE_WEIGHTS * poisson.sf(k[None, :], rates[:, None]).sum(axis=1)))
    return out


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class _BranchContext:
    """Per-branch lookups shared by valid and bad rows."""

    profile: BranchProfile
    staff: tuple[str, ...]
    staff_p: np.ndarray
    home_city: str


def _name_pool(culture: str) -> list[str]:
    firsts, lasts = _FIRST[culture], _LAST[culture]
    if culture in _FAMILY_NAME_FIRST:
        return [f"{last} {first}" for last in lasts for first in firsts]
    return [f"{first} {last}" for last in lasts for first in firsts]


_NAME_POOLS = {c: _name_pool(c) for c in _CULTURES}
_ALL_NAMES = np.array([n for c in _CULTURES for n in _NAME_POOLS[c]], dtype=object)
_NAME_OFFSETS = np.cumsum([0] + [len(_NAME_POOLS[c]) for c in _CULTURES])[:-1]
_NAME_SIZES = np.array([len(_NAME_POOLS[c]) for c in _CULTURES])


def _branch_context(profile: BranchProfile, seed: int) -> _BranchContext:
    """Staff roster: 3-12 people, more at bigger branches, a few selling most of the cars."""
    rng = _rng(seed, _branch_key(profile.branch_id), _STREAM_STAFF)
    n_staff = int(np.clip(round(profile.base_units / 10.0) + rng.integers(1, 4), 3, 12))
    home = _HOME_CULTURE[profile.country]
    staff: list[str] = []
    while len(staff) < n_staff:
        culture = home if rng.random() < 0.9 else "west"
        pool = _NAME_POOLS[culture]
        candidate = pool[int(rng.integers(len(pool)))]
        if candidate not in staff:
            staff.append(candidate)
    region = REGIONS[profile.region]
    home_city = next((c for c in region.cities if c in profile.name), region.cities[0])
    return _BranchContext(profile, tuple(staff), rng.dirichlet(np.full(n_staff, 2.0)), home_city)


def _categorical(rng: np.random.Generator, p: tuple[float, ...] | np.ndarray, n: int) -> np.ndarray:
    return rng.choice(len(p), size=n, p=np.asarray(p, dtype=np.float64))


def _vins(model: np.ndarray, trim: np.ndarray, model_year: np.ndarray, serial: np.ndarray) -> list[str]:
    """17-char VINs with a valid position-9 check digit; the serial keeps them unique."""
    n = model.size
    chars = np.empty((n, 17), dtype=np.uint8)
    table = np.array([[ord(c) for c in m.wmi + m.code + "0" + m.body] for m in _CATALOGUE], dtype=np.uint8)
    chars[:, 0:8] = table[model]  # WMI, model code, trim placeholder, body
    chars[:, 5] = np.frombuffer(_TRIM_CODES.encode(), dtype=np.uint8)[trim]
    year_codes = np.array([ord(_YEAR_CODES[y]) for y in range(2010, 2040)], dtype=np.uint8)
    chars[:, 9] = year_codes[model_year - 2010]
    chars[:, 10] = np.array([ord(m.plant) for m in _CATALOGUE], dtype=np.uint8)[model]
    digits = serial[:, None] // (10 ** np.arange(5, -1, -1))[None, :] % 10
    chars[:, 11:17] = (digits + ord("0")).astype(np.uint8)
    chars[:, 8] = ord("0")
    check = (_VIN_VALUES[chars] * _VIN_WEIGHTS).sum(axis=1) % 11
    chars[:, 8] = np.where(check == 10, ord("X"), check + ord("0")).astype(np.uint8)
    return chars.view("S17").ravel().astype("U17").tolist()


def _national_ids(
    rng: np.random.Generator, country: str, region: str, birth: np.ndarray
) -> list[str]:
    """Country-shaped IDs with real check digits, so PII detectors have something real to match."""
    n = birth.size
    b = birth.astype("datetime64[D]")
    y = b.astype("datetime64[Y]").astype(np.int64) + 1970
    m = b.astype("datetime64[M]").astype(np.int64) % 12 + 1
    d = (b - b.astype("datetime64[M]")).astype(np.int64) + 1
    if country == "CN":  # 18 chars: area(6) + YYYYMMDD + sequence(3) + ISO 7064 MOD 11-2
        prefixes = _CN_ID_PREFIXES[region]
        area = np.array([int(p) for p in prefixes])[rng.integers(0, len(prefixes), n)] * 100 + rng.integers(1, 16, n)
        seq = rng.integers(0, 1000, n)
        body = np.stack([area // 10 ** k % 10 for k in range(5, -1, -1)]
                        + [y // 10 ** k % 10 for k in range(3, -1, -1)]
                        + [m // 10, m % 10, d // 10, d % 10]
                        + [seq // 100, seq // 10 % 10, seq % 10], axis=1)  # fmt: skip
        w = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
        check = np.array(list("10X98765432"))[(body * w).sum(axis=1) % 11]
        cols = (area.tolist(), y.tolist(), m.tolist(), d.tolist(), seq.tolist(), check.tolist())
        return [f"{a:06d}{yy:04d}{mm:02d}{dd:02d}{s:03d}{c}" for a, yy, mm, dd, s, c in zip(*cols)]
    if country == "KR":  # 14 chars: YYMMDD-GNNNNNC, G encodes century and sex
        sex = rng.integers(0, 2, n)
        g = np.where(y >= 2000, 3, 1) + sex
        rest = rng.integers(0, 100_000, n)
        digits = np.stack([y % 100 // 10, y % 10, m // 10, m % 10, d // 10, d % 10, g]
                          + [rest // 10 ** k % 10 for k in range(4, -1, -1)], axis=1)  # fmt: skip
        w = np.array([2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5])
        check = (11 - (digits * w).sum(axis=1) % 11) % 10
        cols = (y.tolist(), m.tolist(), d.tolist(), g.tolist(), rest.tolist(), check.tolist())
        return [f"{yy % 100:02d}{mm:02d}{dd:02d}-{gg}{r:05d}{c}" for yy, mm, dd, gg, r, c in zip(*cols)]
    # JP My Number: 11 random digits + check digit (12 chars).
    digits = rng.integers(0, 10, size=(n, 11))
    r = (digits * np.array([6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2])).sum(axis=1) % 11
    check = np.where(r <= 1, 0, 11 - r)
    full = np.concatenate([digits, check[:, None]], axis=1) + ord("0")
    return full.astype(np.uint8).view("S12").ravel().astype("U12").tolist()


def _phones(rng: np.random.Generator, country: str, n: int) -> list[str]:
    """Mobile numbers in each country's usual international format."""
    a, b = rng.integers(0, 10_000, n).tolist(), rng.integers(0, 10_000, n).tolist()
    if country == "JP":
        carrier = np.array([70, 80, 90])[rng.integers(0, 3, n)].tolist()
        return [f"+81-{c}-{x:04d}-{y:04d}" for c, x, y in zip(carrier, a, b)]
    if country == "CN":
        prefixes = np.array([130, 131, 135, 136, 138, 139, 150, 151, 158, 186, 188, 199])
        carrier = prefixes[rng.integers(0, prefixes.size, n)].tolist()
        return [f"+86-{c}-{x:04d}-{y:04d}" for c, x, y in zip(carrier, a, b)]
    return [f"+82-10-{x:04d}-{y:04d}" for x, y in zip(a, b)]


def _draw_rows(
    rng: np.random.Generator, ctx: _BranchContext, sale_days: np.ndarray, serial: np.ndarray
) -> dict[str, list[Any]]:
    """Everything about a sale except its id, vectorised over rows; ``sale_days`` are datetime64[D]."""
    profile, n = ctx.profile, sale_days.size
    region = REGIONS[profile.region]
    month_idx = sale_days.astype("datetime64[M]").astype(np.int64)
    year = sale_days.astype("datetime64[Y]").astype(np.int64) + 1970
    cal_month = month_idx % 12 + 1

    # Model: only models already launched in the branch's region can be sold.
    launched = _launch_index(profile.region)
    launch = np.array([launched.get(m.name, 10**6) if m.name in MODEL_LAUNCHES else -(10**6) for m in _CATALOGUE])
    w = np.array([m.weight for m in _CATALOGUE])[None, :] * (month_idx[:, None] >= launch[None, :])
    cum = np.cumsum(w, axis=1)
    model = (cum < rng.random(n)[:, None] * cum[:, -1:]).sum(axis=1)
    trim = _categorical(rng, _TRIM_P, n)
    model_year = year + (cal_month >= 9)  # next model year arrives in September

    base_price = np.array([m.prices for m in _CATALOGUE])[model, trim]
    list_price = np.round(base_price * (1.0 + _PRICE_GROWTH) ** (model_year - 2020) / 10.0) * 10.0
    sale_price = np.round(list_price * (1.0 - rng.uniform(0.0, _MAX_DISCOUNT, n)), 2)
    discount = np.round(list_price - sale_price, 2)

    financing = _categorical(rng, _FINANCING_P, n)
    lead = _categorical(rng, _LEAD_P, n)
    seller = _categorical(rng, ctx.staff_p, n)

    home = _CULTURES.index(_HOME_CULTURE[profile.country])
    culture_p = np.full(len(_CULTURES), 0.05)
    culture_p[home], culture_p[_CULTURES.index("west")] = 0.82, 0.08
    culture = _categorical(rng, culture_p, n)
    name_idx = _NAME_OFFSETS[culture] + (rng.random(n) * _NAME_SIZES[culture]).astype(np.int64)

    latest_birth = np.minimum(sale_days - np.timedelta64(_ADULT_DAYS, "D"), np.datetime64(_MAX_BIRTH, "D"))
    earliest = np.datetime64(_MIN_BIRTH, "D")
    span = (latest_birth - earliest).astype(np.int64) + 1
    birth = earliest + (rng.random(n) * span).astype(np.int64).astype("timedelta64[D]")

    cities = np.array(region.cities, dtype=object)
    city = np.where(rng.random(n) < 0.6, ctx.home_city, cities[rng.integers(0, len(cities), n)])
    street = np.array(region.streets, dtype=object)[rng.integers(0, len(region.streets), n)]
    house = rng.integers(1, 1000, n)

    staff = np.array(ctx.staff, dtype=object)
    models = np.array([m.name for m in _CATALOGUE], dtype=object)
    return {
        "sale_date": np.datetime_as_string(sale_days, unit="D").tolist(),
        "vin": _vins(model, trim, model_year, serial),
        "model": models[model].tolist(),
        "trim": np.array(_TRIMS, dtype=object)[trim].tolist(),
        "list_price": list_price.tolist(),
        "sale_price": sale_price.tolist(),
        "discount": discount.tolist(),
        "financing_type": np.array(_FINANCING, dtype=object)[financing].tolist(),
        "lead_source": np.array(_LEAD_SOURCES, dtype=object)[lead].tolist(),
        "salesperson": staff[seller].tolist(),
        "customer_name": _ALL_NAMES[name_idx].tolist(),
        "customer_phone": _phones(rng, profile.country, n),
        "customer_national_id": _national_ids(rng, profile.country, profile.region, birth),
        "customer_address": [f"{h} {s}, {c}" for h, s, c in zip(house.tolist(), street.tolist(), city.tolist())],
        "customer_birth_date": np.datetime_as_string(birth, unit="D").tolist(),
    }


def _customer_ids(rng: np.random.Generator, branch_id: str, n: int) -> list[str]:
    """The DMS customer number of each of `n` sales in date order: new customers, returning
    ones, and fleet accounts buying many cars a year."""
    accounts = max(1, round(n / _SALES_PER_FLEET_ACCOUNT))
    kind, pick, fleet = rng.random(n), rng.random(n), rng.integers(0, accounts, n)
    ids: list[str] = []
    private = 0
    for i in range(n):
        if kind[i] < _FLEET_P:
            ids.append(f"{branch_id}-F{fleet[i] + 1:02d}")
        elif kind[i] < _FLEET_P + _REPEAT_P and private:
            ids.append(f"{branch_id}-C{int(pick[i] * private) + 1:06d}")
        else:
            private += 1
            ids.append(f"{branch_id}-C{private:06d}")
    return ids


def _sale_days(rng: np.random.Generator, month_idx: np.ndarray) -> np.ndarray:
    """A uniformly random day within each given month, as datetime64[D]."""
    start = month_idx.astype("datetime64[M]").astype("datetime64[D]")
    length = ((month_idx + 1).astype("datetime64[M]").astype("datetime64[D]") - start).astype(np.int64)
    return start + (rng.random(month_idx.size) * length).astype(np.int64).astype("timedelta64[D]")


def _bad_row_count(n_valid: int, bad_row_rate: float) -> int:
    if bad_row_rate == 0 or n_valid == 0:
        return 0
    return max(round(bad_row_rate * n_valid), 4 if n_valid >= 200 else 0)


def _make_bad_rows(
    rng: np.random.Generator,
    ctx: _BranchContext,
    valid: dict[str, list[Any]],
    valid_days: np.ndarray,
    valid_serials: np.ndarray,
    months: np.ndarray,
    n_bad: int,
) -> dict[str, list[Any]]:
    """Plausible rows with exactly one defect each, kinds in rotation (see BAD_ROW_KINDS)."""
    days = _sale_days(rng, rng.choice(months, size=n_bad))
    taken = set(valid_serials.tolist())
    serials: list[int] = []
    while len(serials) < n_bad:  # fresh serials so only the duplicate_vin rows collide
        for s in rng.integers(1, _SERIAL_SPACE + 1, size=n_bad).tolist():
            if s not in taken and len(serials) < n_bad:
                taken.add(s)
                serials.append(s)
    rows = _draw_rows(rng, ctx, days, np.array(serials, dtype=np.int64))
    rows["customer_id"] = [f"{ctx.profile.branch_id}-X{i + 1:05d}" for i in range(n_bad)]

    last_day = valid_days.max()
    earlier = np.flatnonzero(valid_days < last_day)
    n_bad_dates = 0
    for i in range(n_bad):
        kind = BAD_ROW_KINDS[i % len(BAD_ROW_KINDS)]
        if kind == "negative_price":
            rows["list_price"][i] = -rows["list_price"][i]
            rows["sale_price"][i] = -rows["sale_price"][i]
            rows["discount"][i] = round(rows["list_price"][i] - rows["sale_price"][i], 2)
        elif kind == "future_date":
            _, mm, dd = rows["sale_date"][i].split("-")
            rows["sale_date"][i] = f"{_FUTURE_YEAR}-{mm}-{min(int(dd), 28):02d}"
        elif kind == "duplicate_vin":
            # Same car sold again later (a re-keyed deal): same VIN, model, trim, list price, customer.
            j = int(rng.choice(earlier)) if earlier.size else int(np.argmin(valid_days))
            gap = int((last_day - valid_days[j]).astype(np.int64))
            when = valid_days[j] + np.timedelta64(int(rng.integers(1, gap + 1)) if gap > 0 else 0, "D")
            rows["sale_date"][i] = str(when)
            for col in ("vin", "model", "trim", "list_price", "customer_id"):
                rows[col][i] = valid[col][j]
            rows["sale_price"][i] = round(rows["list_price"][i] * (1.0 - float(rng.uniform(0, _MAX_DISCOUNT))), 2)
            rows["discount"][i] = round(rows["list_price"][i] - rows["sale_price"][i], 2)
        else:
            rows["sale_date"][i] = _BAD_DATE_STRINGS[n_bad_dates % len(_BAD_DATE_STRINGS)]
            n_bad_dates += 1
    return rows


def generate_sales(
    profile: BranchProfile,
    seed: int,
    as_of: date = DEFAULT_AS_OF,
    bad_row_rate: float = 0.004,
) -> list[dict[str, Any]]:
    """The branch's DMS sales export: Poisson demand from :func:`monthly_demand`, capped by
    the :func:`allocation` in shortage months, plus bad rows.

    Valid rows come in date order; bad rows sit at random positions. Valid rows depend only on
    ``(profile, seed, as_of)``, not on ``bad_row_rate``.
    """
    try:
        rate = float(bad_row_rate)
    except (TypeError, ValueError):
        rate = math.nan
    if not 0.0 <= rate <= 0.2:  # NaN fails too
        raise ValueError(f"bad_row_rate must lie in [0, 0.2], got {bad_row_rate!r}")
    _check_seed(seed)
    _check_as_of(as_of)
    months = history_months(profile, as_of)
    if not months:
        return []
    key = _branch_key(profile.branch_id)
    ctx = _branch_context(profile, seed)
    rng = _rng(seed, key, _STREAM_SALES)

    expected = monthly_demand(profile, months, seed)
    noise = rng.lognormal(-0.5 * _NOISE_SIGMA**2, _NOISE_SIGMA, size=len(months))  # mean 1
    units = np.minimum(rng.poisson(expected * noise), allocation(profile, months, seed)).astype(np.int64)
    month_idx = np.array([_month_index(m) for m in months], dtype=np.int64)
    days = np.sort(_sale_days(rng, np.repeat(month_idx, units)), kind="stable")
    n_valid = days.size
    if n_valid > _SERIAL_SPACE // 2:
        raise ValueError(f"{profile.branch_id}: {n_valid} sales do not fit the 6-digit VIN serial space")
    serials = rng.choice(_SERIAL_SPACE, size=n_valid, replace=False) + 1
    valid = _draw_rows(rng, ctx, days, serials)
    valid["customer_id"] = _customer_ids(_rng(seed, key, _STREAM_CUSTOMERS), profile.branch_id, n_valid)

    n_bad = _bad_row_count(n_valid, rate)
    data_cols = SALES_COLUMNS[1:]
    valid_tuples = list(zip(*(valid[c] for c in data_cols)))
    if n_bad:
        bad_rng = _rng(seed, key, _STREAM_BAD)
        bad = _make_bad_rows(bad_rng, ctx, valid, days, serials, month_idx, n_bad)
        bad_tuples = list(zip(*(bad[c] for c in data_cols)))
        total = n_valid + n_bad
        is_bad = np.zeros(total, dtype=bool)
        is_bad[bad_rng.choice(total, size=n_bad, replace=False)] = True
        valid_iter, bad_iter = iter(valid_tuples), iter(bad_tuples)
        merged = [next(bad_iter) if flag else next(valid_iter) for flag in is_bad.tolist()]
    else:
        merged = valid_tuples
    return [dict(zip(SALES_COLUMNS, (i, *t))) for i, t in enumerate(merged, start=1)]


# --------------------------------------------------------------------------- I/O


def _tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Dates are TEXT on purpose: malformed dates must survive into the database."""
    text = sa.Text().with_variant(sa.String(255), "mysql", "mariadb")
    key = sa.Text().with_variant(sa.String(32), "mysql", "mariadb")
    real = sa.Double().with_variant(sa.REAL(), "sqlite")
    branch = sa.Table(
        "branch",
        metadata,
        sa.Column("branch_id", key, primary_key=True),
        sa.Column("name", text),
        sa.Column("region", text),
        sa.Column("country", text),
        sa.Column("opening_date", text),
    )
    sales = sa.Table(
        "sales",
        metadata,
        sa.Column("sale_id", sa.Integer, primary_key=True, autoincrement=False),
        *(sa.Column(c, real if c in _REAL_COLUMNS else text) for c in SALES_COLUMNS[1:]),
    )
    return branch, sales


def write_branch_db(url: str, profile: BranchProfile, rows: list[dict[str, Any]]) -> None:
    """(Re)create ``branch`` and ``sales`` at ``url`` and load them in one transaction."""
    metadata = sa.MetaData()
    branch, sales = _tables(metadata)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn, checkfirst=True)
            metadata.create_all(conn)
            conn.execute(
                branch.insert(),
                [{
                    "branch_id": profile.branch_id,
                    "name": profile.name,
                    "region": profile.region,
                    "country": profile.country,
                    "opening_date": profile.opening_date.isoformat(),
                }],
            )  # fmt: skip
            if rows:
                conn.execute(sales.insert(), rows)
    finally:
        engine.dispose()


def simulate_alliance(
    n_branches: int, seed: int, out_dir: pathlib.Path, as_of: date = DEFAULT_AS_OF
) -> list[BranchProfile]:
    """Write ``<branch_id>.db`` per branch and ``alliance.json``; stale files are left alone."""
    profiles = plan_alliance(n_branches, seed, as_of)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for profile in profiles:
        path = (out / f"{profile.branch_id}.db").resolve()
        write_branch_db(f"sqlite:///{path.as_posix()}", profile, generate_sales(profile, seed, as_of))
    (out / "alliance.json").write_text(
        json.dumps([p.model_dump(mode="json") for p in profiles], indent=2) + "\n", encoding="utf-8"
    )
    return profiles
