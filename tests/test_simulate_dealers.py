"""The dealer simulator must be reproducible, realistic enough to learn from, and dirty on purpose."""

from __future__ import annotations

import json
import re
from datetime import date

import numpy as np
import pytest
import sqlalchemy as sa

from sovereign.simulation.dealers import (
    INCENTIVE_CAMPAIGNS,
    LUNAR_NEW_YEAR,
    MODEL_LAUNCHES,
    SUPPLY_SHORTAGES,
    PERSONAL_COLUMNS,
    SALES_COLUMNS,
    BranchProfile,
    allocation,
    expected_sales,
    generate_sales,
    history_months,
    monthly_demand,
    plan_alliance,
    ramp_up,
    simulate_alliance,
    write_branch_db,
)

SEED = 11
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
VIN = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
_VIN_TRANSLIT = dict(zip("ABCDEFGHJKLMNPRSTUVWXYZ", (*range(1, 9), 1, 2, 3, 4, 5, 7, 9, *range(2, 10))))
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def _parse(value: str) -> date | None:
    """Strict ISO parse, the way a data contract would do it."""
    if not ISO_DATE.match(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _vin_check_ok(vin: str) -> bool:
    total = sum((int(c) if c.isdigit() else _VIN_TRANSLIT[c]) * w for c, w in zip(vin, _VIN_WEIGHTS))
    return vin[8] == ("X" if total % 11 == 10 else str(total % 11))


def _split(rows: list[dict], as_of: date = date(2026, 10, 31)) -> tuple[list[dict], dict[str, list[dict]]]:
    """Separate valid rows from each kind of injected defect."""
    bad: dict[str, list[dict]] = {"bad_date": [], "future_date": [], "negative_price": [], "duplicate_vin": []}
    seen: dict[str, date] = {}
    valid = []
    for row in sorted(rows, key=lambda r: (_parse(r["sale_date"]) or date.max, r["sale_id"])):
        d = _parse(row["sale_date"])
        if d is None:
            bad["bad_date"].append(row)
        elif d > as_of:
            bad["future_date"].append(row)
        elif row["sale_price"] < 0 or row["list_price"] < 0:
            bad["negative_price"].append(row)
        elif row["vin"] in seen:
            assert d > seen[row["vin"]], "a duplicate VIN must be dated after the original"
            bad["duplicate_vin"].append(row)
        else:
            seen[row["vin"]] = d
            valid.append(row)
    return valid, bad


@pytest.fixture(scope="module")
def alliance() -> list[BranchProfile]:
    return plan_alliance(10, SEED)


@pytest.fixture(scope="module")
def big_branch(alliance: list[BranchProfile]) -> BranchProfile:
    return max((p for p in alliance if p.history_start == date(2020, 1, 1)), key=lambda p: p.base_units)


def test_plan_is_deterministic_and_spans_an_order_of_magnitude(alliance: list[BranchProfile]) -> None:
    assert plan_alliance(10, SEED) == alliance
    assert plan_alliance(10, SEED + 1) != alliance
    assert [p.branch_id for p in alliance] == [f"B{i:03d}" for i in range(1, 11)]
    for seed in range(40):  # a guarantee, not a lucky draw
        units = [p.base_units for p in plan_alliance(10, seed)]
        assert max(units) / min(units) >= 10
        assert 5 <= min(units) and max(units) <= 130
    assert len({p.name for p in alliance}) == 10
    assert {p.country for p in alliance} == {"CN", "JP", "KR"}
    assert len({p.region for p in alliance}) == 6  # every region appears in an alliance of >= 6


def _new_stores(profiles: list[BranchProfile]) -> list[BranchProfile]:
    return [p for p in profiles if p.opening_date >= date(2025, 11, 1)]


@pytest.mark.parametrize("n", [5, 7, 10, 30])
def test_new_stores_have_6_to_12_months_and_the_rest_open_early_or_inside_the_window(n: int) -> None:
    profiles = plan_alliance(n, SEED)
    new = _new_stores(profiles)
    assert len(new) == max(round(0.2 * n), 1)
    for p in new:
        assert p.history_start == p.opening_date
        assert 6 <= len(history_months(p)) <= 12  # 0 to 6 months to train on after a 6-month holdout
    for p in profiles:
        if p in new:
            continue
        if p.opening_date == p.history_start:  # opened inside the DMS window: its ramp-up is in its data
            assert date(2020, 3, 1) <= p.opening_date <= date(2024, 4, 1)
        else:
            assert date(1995, 1, 1) <= p.opening_date <= date(2018, 12, 31)
            # the whole export window (2020-01 .. 2026-10), or since a DMS migration
            assert len(history_months(p)) == 82 or 29 <= len(history_months(p)) <= 76


def test_new_stores_span_every_history_length_from_0_to_6_training_months() -> None:
    lengths = {len(history_months(p)) - 6 for p in _new_stores(plan_alliance(300, SEED))}
    assert lengths == set(range(7))


def test_a_new_store_ramps_up_towards_its_size() -> None:
    p = _new_stores(plan_alliance(30, SEED))[0]
    first = p.opening_date.year * 12 + p.opening_date.month - 1
    months = [date((first + i) // 12, (first + i) % 12 + 1, 1) for i in range(36)]  # its first three years
    ramp = ramp_up(p, months, SEED)
    assert 0.3 < ramp[0] < 0.4 and np.all(np.diff(ramp) > 0) and ramp[-1] > 0.98
    assert np.array_equal(ramp, ramp_up(p, months, SEED))
    # long-open stores are at their size
    old = next(q for q in plan_alliance(30, SEED) if q.opening_date < date(2019, 1, 1))
    assert np.allclose(ramp_up(old, months, SEED), 1.0)
    # and the demand shows it: the same store, long open, would sell more in the same months
    established = p.model_copy(update={"opening_date": date(2001, 1, 1)})
    assert np.allclose(monthly_demand(p, months, SEED), monthly_demand(established, months, SEED) * ramp)


def test_some_established_branches_lost_history_to_a_dms_migration() -> None:
    profiles = [p for p in plan_alliance(60, SEED) if p.opening_date < date(2019, 1, 1)]
    migrated = [p for p in profiles if p.history_start > date(2020, 1, 1)]
    assert 0.3 < len(migrated) / len(profiles) < 0.7
    assert all(date(2020, 7, 1) <= p.history_start <= date(2024, 6, 1) for p in migrated)


def test_new_store_sales_stay_inside_its_history(alliance: list[BranchProfile]) -> None:
    young = _new_stores(alliance)[0]
    valid, _ = _split(generate_sales(young, SEED))
    months = {r["sale_date"][:7] for r in valid}
    assert min(months) >= young.history_start.isoformat()[:7]
    assert max(months) == "2026-10"
    assert 6 <= len(months) <= 12


def test_as_of_mid_month_drops_the_incomplete_month(big_branch: BranchProfile) -> None:
    assert history_months(big_branch, date(2026, 10, 30))[-1] == date(2026, 9, 1)
    assert history_months(big_branch, date(2026, 10, 31))[-1] == date(2026, 10, 1)


def test_sales_are_deterministic_per_seed(alliance: list[BranchProfile]) -> None:
    p = alliance[0]
    first = generate_sales(p, SEED)
    assert first == generate_sales(p, SEED)
    assert json.dumps(first) == json.dumps(generate_sales(p, SEED))  # byte-identical, not just ==
    assert first != generate_sales(p, SEED + 1)


def test_valid_rows_do_not_depend_on_bad_row_rate(big_branch: BranchProfile) -> None:
    clean = generate_sales(big_branch, SEED, bad_row_rate=0.0)
    dirty = generate_sales(big_branch, SEED, bad_row_rate=0.02)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "sale_id"} for r in rows]  # noqa: E731
    valid, bad = _split(dirty)
    assert strip(valid) == strip(clean)
    assert sum(map(len, bad.values())) == len(dirty) - len(clean) == round(0.02 * len(clean))


def test_bad_rows_of_every_kind(big_branch: BranchProfile) -> None:
    rows = generate_sales(big_branch, SEED)
    valid, bad = _split(rows)
    assert [r["sale_id"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(bad[kind] for kind in bad), {k: len(v) for k, v in bad.items()}
    assert sum(map(len, bad.values())) == max(round(0.004 * len(valid)), 4)
    assert all(r["sale_date"].startswith("2031-") for r in bad["future_date"])
    assert all(r["sale_price"] < 0 and r["list_price"] < 0 for r in bad["negative_price"])
    # Valid rows stay in date order in the export; only the bad rows are scattered.
    valid_ids = {r["sale_id"] for r in valid}
    in_export_order = [r["sale_date"] for r in rows if r["sale_id"] in valid_ids]
    assert in_export_order == sorted(in_export_order)


def test_small_branch_gets_at_least_four_bad_rows() -> None:
    p = BranchProfile(branch_id="B900", name="Tiny Motors Nara", region="Kansai", country="JP",
                      opening_date=date(2001, 1, 1), base_units=3.0, history_start=date(2020, 1, 1))  # fmt: skip
    valid, bad = _split(generate_sales(p, SEED))
    assert len(valid) >= 200
    assert {k: len(v) for k, v in bad.items()} == {"bad_date": 1, "future_date": 1, "negative_price": 1,
                                                   "duplicate_vin": 1}  # fmt: skip


def test_valid_rows_look_like_real_sales(alliance: list[BranchProfile]) -> None:
    phone = {"JP": r"^\+81-[789]0-\d{4}-\d{4}$", "CN": r"^\+86-1\d\d-\d{4}-\d{4}$", "KR": r"^\+82-10-\d{4}-\d{4}$"}
    for p in alliance[:6]:
        valid, _ = _split(generate_sales(p, SEED))
        assert len({r["vin"] for r in valid}) == len(valid)
        assert len({r["salesperson"] for r in valid}) in range(3, 13)
        for r in valid:
            assert set(r) == set(SALES_COLUMNS)
            assert VIN.match(r["vin"]) and _vin_check_ok(r["vin"]), r["vin"]
            assert r["financing_type"] in {"cash", "loan", "lease"}
            assert r["lead_source"] in {"walk_in", "website", "referral", "phone", "event"}
            assert 20_000 <= r["list_price"] <= 70_000
            assert r["list_price"] * 0.88 - 0.01 <= r["sale_price"] <= r["list_price"]
            assert r["discount"] == pytest.approx(r["list_price"] - r["sale_price"], abs=0.011)
            assert re.match(phone[p.country], r["customer_phone"]), r["customer_phone"]
            assert 12 <= len(r["customer_national_id"]) <= 18
            assert re.match(r"^\d+ .+, .+$", r["customer_address"])
            born, sold = _parse(r["customer_birth_date"]), _parse(r["sale_date"])
            assert born is not None and date(1950, 1, 1) <= born <= date(2004, 12, 31)
            assert (sold - born).days >= 18 * 365
            for line, by_region in MODEL_LAUNCHES.items():
                if r["model"] == line:  # nobody sells a car before its launch in the branch's region
                    assert sold >= by_region[p.region]


def test_seasonality_follows_lunar_new_year_and_fiscal_year(alliance: list[BranchProfile]) -> None:
    months = [date(y, m, 1) for y in range(2020, 2027) for m in range(1, 13)]
    lny = {(d.year, d.month) for d in LUNAR_NEW_YEAR}
    is_lny = np.array([(m.year, m.month) in lny for m in months])
    before_lny = np.append(is_lny[1:], False)
    for p in alliance:
        demand = monthly_demand(p, months, SEED)
        assert np.all(demand > 0)
        if p.opening_date > date(2019, 1, 1):
            continue  # ramping up inside these years: not a clean comparison
        if p.country == "CN":
            assert demand[is_lny].mean() < 0.8 * demand[before_lny].mean()
        if p.country == "KR":
            assert demand[is_lny].mean() < demand[before_lny].mean()
        if p.country == "JP":
            quiet = np.array([m not in INCENTIVE_CAMPAIGNS and m.replace(month=m.month - 1 or 12, year=m.year - (m.month == 1))
                              not in INCENTIVE_CAMPAIGNS for m in months])  # no campaign, nor one the month before
            march = np.array([m.month == 3 for m in months]) & quiet
            feb = np.array([m.month == 2 for m in months]) & quiet
            assert demand[march].mean() > 1.15 * demand[feb].mean()
            # No Lunar New Year in Japan: January is not depressed relative to the year's trend.
            jan = np.array([m.month == 1 for m in months]) & quiet
            june = np.array([m.month == 6 for m in months]) & quiet
            assert demand[jan].mean() == pytest.approx(demand[june].mean(), rel=0.05)


def test_launches_differ_by_region_and_the_demand_shows_it(alliance: list[BranchProfile]) -> None:
    """Each line reaches the regions months apart; a branch's demand jumps at its own region's
    launch only: Aurora EV reached Kanto in January 2023 and Kansai in April."""
    for line, by_region in MODEL_LAUNCHES.items():
        assert len(set(by_region.values())) == len(by_region) == 6, line
    p = next(q for q in alliance if q.opening_date < date(2019, 1, 1))
    kanto = p.model_copy(update={"region": "Kanto", "country": "JP"})
    kansai = p.model_copy(update={"region": "Kansai", "country": "JP"})

    def year_on_year(profile: BranchProfile, month: date) -> float:
        now, before = monthly_demand(profile, [month, month.replace(year=month.year - 1)], SEED)
        return now / before

    assert year_on_year(kanto, date(2023, 1, 1)) > 1.25 and year_on_year(kansai, date(2023, 1, 1)) < 1.02
    assert year_on_year(kansai, date(2023, 4, 1)) > 1.25 > year_on_year(kanto, date(2023, 4, 1))


def test_campaign_months_lift_demand_and_pull_the_next_month_forward(alliance: list[BranchProfile]) -> None:
    p = alliance[0]
    for month in INCENTIVE_CAMPAIGNS:
        if month > date(2026, 10, 1):
            continue
        with_campaign = monthly_demand(p, [month], SEED)[0]
        without = monthly_demand(p.model_copy(update={"branch_id": p.branch_id}), [month], SEED)[0]
        assert with_campaign == without  # pure
    demand = monthly_demand(p, [date(2024, 7, 1), date(2024, 8, 1)], SEED)
    twin = monthly_demand(p, [date(2023, 7, 1), date(2023, 8, 1)], SEED)  # no campaign in July 2023
    assert demand[0] / twin[0] > 1.15 and demand[1] / twin[1] < 0.97


def test_shortage_months_censor_sales_at_the_allocation(alliance: list[BranchProfile]) -> None:
    for p in alliance:
        months = history_months(p)
        cap = allocation(p, months, SEED)
        short = np.array([m in SUPPLY_SHORTAGES for m in months])
        assert np.all(np.isinf(cap[~short])) and np.all(np.isfinite(cap[short]))
        valid, _ = _split(generate_sales(p, SEED))
        sold = {m: 0 for m in months}
        for r in valid:
            sold[date.fromisoformat(r["sale_date"][:8] + "01")] += 1
        units = np.array([sold[m] for m in months])
        assert np.all(units <= cap)  # never more than the allocation
        oracle, demand = expected_sales(p, months, SEED), monthly_demand(p, months, SEED)
        assert np.allclose(oracle[~short], demand[~short])
        assert np.all(oracle[short] <= cap[short]) and np.all(oracle[short] < demand[short])
        assert np.all(oracle[short] > 0.5 * demand[short])


def test_expected_sales_is_the_mean_of_censored_poisson_draws() -> None:
    p = BranchProfile(branch_id="B500", name="x", region="Kanto", country="JP", opening_date=date(2001, 1, 1),
                      base_units=8.0, history_start=date(2020, 1, 1))  # fmt: skip
    month = [SUPPLY_SHORTAGES[-1]]
    lam, cap = monthly_demand(p, month, SEED)[0], allocation(p, month, SEED)[0]
    rng = np.random.default_rng(0)
    draws = np.minimum(rng.poisson(lam * rng.lognormal(-0.5 * 0.05**2, 0.05, 200_000)), cap)
    assert expected_sales(p, month, SEED)[0] == pytest.approx(draws.mean(), rel=0.01)


def test_realised_units_match_expected_demand(alliance: list[BranchProfile]) -> None:
    for p in alliance:
        months = history_months(p)
        expected = expected_sales(p, months, SEED).sum()
        valid, _ = _split(generate_sales(p, SEED))
        assert abs(len(valid) - expected) < 5 * np.sqrt(expected) + 0.05 * expected


def test_monthly_demand_is_pure_and_branch_specific(alliance: list[BranchProfile]) -> None:
    months = history_months(alliance[0])
    a = monthly_demand(alliance[0], months, SEED)
    assert np.array_equal(a, monthly_demand(alliance[0], months, SEED))
    twin = alliance[0].model_copy(update={"branch_id": "B999"})
    b = monthly_demand(twin, months, SEED)
    assert not np.array_equal(a, b)  # branch-level noise on the regional effects
    assert np.allclose(a, b, rtol=0.15)  # ... but the same regional structure


def test_simulate_alliance_writes_readable_databases(tmp_path) -> None:
    profiles = simulate_alliance(6, SEED, tmp_path)
    expected_files = [f"B00{i}.db" for i in range(1, 7)] + ["alliance.json"]
    assert sorted(f.name for f in tmp_path.iterdir()) == expected_files
    stored = [BranchProfile(**d) for d in json.loads((tmp_path / "alliance.json").read_text())]
    assert stored == profiles == plan_alliance(6, SEED)

    p = profiles[2]
    engine = sa.create_engine(f"sqlite:///{tmp_path / (p.branch_id + '.db')}")
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == {"branch", "sales"}
        cols = inspector.get_columns("sales")
        assert [c["name"] for c in cols] == list(SALES_COLUMNS)
        assert set(PERSONAL_COLUMNS) <= set(SALES_COLUMNS)
        types = {c["name"]: str(c["type"]) for c in cols}
        assert types["sale_id"] == "INTEGER" and types["list_price"] == "REAL" and types["sale_date"] == "TEXT"
        assert inspector.get_pk_constraint("sales")["constrained_columns"] == ["sale_id"]
        assert inspector.get_pk_constraint("branch")["constrained_columns"] == ["branch_id"]
        with engine.connect() as conn:
            branch = conn.execute(sa.text("SELECT * FROM branch")).mappings().all()
            rows = [dict(r) for r in conn.execute(sa.text("SELECT * FROM sales ORDER BY sale_id")).mappings()]
    finally:
        engine.dispose()
    assert branch == [{"branch_id": p.branch_id, "name": p.name, "region": p.region, "country": p.country,
                       "opening_date": p.opening_date.isoformat()}]  # fmt: skip
    assert rows == generate_sales(p, SEED)
    # Malformed dates survive the round trip: that is what the data contract has to catch.
    assert any(_parse(r["sale_date"]) is None for r in rows)


def test_write_branch_db_replaces_existing_tables(tmp_path, alliance: list[BranchProfile]) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    p = alliance[1]
    rows = generate_sales(p, SEED)
    write_branch_db(url, p, rows)
    write_branch_db(url, p, rows[:10])
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM sales")).scalar_one() == 10
            assert conn.execute(sa.text("SELECT count(*) FROM branch")).scalar_one() == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize("n", [0, -1, 1000])
def test_rejects_bad_branch_counts(n: int, tmp_path) -> None:
    with pytest.raises(ValueError, match="n_branches"):
        plan_alliance(n, SEED)
    with pytest.raises(ValueError, match="n_branches"):
        simulate_alliance(n, SEED, tmp_path)


@pytest.mark.parametrize("rate", [-0.001, 0.2001, float("nan")])
def test_rejects_bad_row_rate(rate: float, alliance: list[BranchProfile]) -> None:
    with pytest.raises(ValueError, match="bad_row_rate"):
        generate_sales(alliance[0], SEED, bad_row_rate=rate)


def test_boundaries_are_accepted() -> None:
    assert len(plan_alliance(1, SEED)) == 1
    assert plan_alliance(1, SEED)[0].opening_date < date(2025, 1, 1)  # too few branches for a new store
    p = plan_alliance(2, SEED)[0]
    assert generate_sales(p, SEED, bad_row_rate=0.2)
