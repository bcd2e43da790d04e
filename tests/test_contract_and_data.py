"""The data contract and the policy-checked read of a branch database."""

from collections import Counter
from datetime import date

import pytest
from sqlalchemy import create_engine, text

from node_agent.contract import ContractViolation, check_columns, validate_sales
from node_agent.data import monthly_units, read_branch_dataset
from policies import JobRefusal
from tests.conftest import example_policy, forecast_request


def _row(i, d="2024-03-05", vin=None, price=30000.0):
    return {"sale_id": i, "sale_date": d, "vin": vin or f"VIN{i:014d}", "list_price": price, "sale_price": price}


def test_quarantine_counts_each_reason_and_keeps_first_duplicate():
    rows = [
        _row(1), _row(2, d="2024-13-45"), _row(3, d="n/a"), _row(4, d="2031-01-01"),
        _row(5, price=-10.0), _row(6, vin="VIN00000000000001", d="2024-04-01"), _row(7, price="abc"),
        {**_row(8), "vin": None},
    ]
    valid, quarantined = validate_sales(rows, today=date(2026, 11, 1))
    assert [s.sale_id for s in valid] == ["1"]
    assert quarantined == Counter(
        unparseable_date=2, future_sale_date=1, negative_price=1, duplicate_vin=1,
        unparseable_price=1, missing_value=1,
    )
    assert len(valid) + sum(quarantined.values()) == len(rows)  # nothing silently dropped


def test_missing_required_column_names_table_and_column():
    with pytest.raises(ContractViolation, match="table 'sales' is missing required column 'vin'"):
        check_columns("sales", ["sale_id", "sale_date", "list_price", "sale_price"])


def test_monthly_units_fills_empty_months_with_zero():
    series = monthly_units([date(2024, 1, 3), date(2024, 1, 9), date(2024, 3, 1)])
    assert series.units.tolist() == [2, 0, 1]
    assert series.months == ["2024-01", "2024-02", "2024-03"]


def test_read_never_selects_personal_fields(small_alliance):
    largest = max(small_alliance.glob("*.db"), key=lambda db: db.stat().st_size)  # a new store may have too few rows for bad ones
    data = read_branch_dataset(f"sqlite:///{largest}", example_policy(), forecast_request(), key=b"k")
    personal = {"customer_name", "customer_phone", "customer_national_id", "customer_address", "customer_birth_date", "salesperson"}
    assert not personal & set(data.fields_read)
    dropped = {d.field for d in data.decisions if d.treatment.kind == "drop"}
    assert personal <= dropped
    assert data.row_count == data.valid_count + sum(data.quarantined.values())
    assert sum(data.quarantined.values()) >= 4  # the simulator injects bad rows; all are caught
    assert len(data.content_hash) == 64


def test_policy_forbidding_a_needed_field_refuses(small_alliance):
    base = example_policy()
    strict = base.model_copy(update={"tables": {**base.tables, "sales": {**base.tables["sales"], "vin": "restricted"}}})
    with pytest.raises(JobRefusal, match="domestic_dealer.yaml:6: job test-job asks for restricted field sales.vin"):
        read_branch_dataset(f"sqlite:///{small_alliance / 'B001.db'}", strict, forecast_request(), key=b"k")


def test_dropped_column_is_refused_with_its_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE sales (sale_id INTEGER, vin TEXT, list_price REAL, sale_price REAL)"))
    with pytest.raises(ContractViolation, match="missing required column 'sale_date'"):
        read_branch_dataset(url, example_policy(), forecast_request(), key=b"k")


# What a careless DMS export holds: NaN and infinities as text or floats, absurd placeholders.
BAD_PRICES = [
    ("NaN", "non_finite_price"), ("nan", "non_finite_price"), ("NAN", "non_finite_price"),
    ("inf", "non_finite_price"), ("-Infinity", "non_finite_price"), (" Infinity ", "non_finite_price"),
    (float("nan"), "non_finite_price"), (float("inf"), "non_finite_price"), (float("-inf"), "non_finite_price"),
    (1e12, "absurd_price"), ("1e12", "absurd_price"), (9.99e99, "absurd_price"), (2**63, "absurd_price"),
    (10**400, "absurd_price"),
    # the same values after a `generalise: bucket` treatment, and buckets no treatment would write
    ("nan-nan", "non_finite_price"), ("NaN-NaN", "non_finite_price"), ("0-inf", "non_finite_price"),
    ("1e999-2e999", "non_finite_price"), ("1e+12-1e+12", "absurd_price"), ("1e+300-1e+300", "absurd_price"),
    ("-5000-0", "negative_price"), ("50000-45000", "unparseable_price"),
]


@pytest.mark.parametrize("price, reason", BAD_PRICES, ids=[repr(p) for p, _ in BAD_PRICES])
@pytest.mark.parametrize("column", ["sale_price", "list_price"])
def test_a_non_finite_or_absurd_price_is_quarantined_under_its_reason(price, reason, column):
    from node_agent.contract import QUARANTINE_REASONS

    assert reason in QUARANTINE_REASONS  # so egress lets the count leave
    rows = [_row(1), {**_row(2), column: price}, _row(3, price="45000-50000"), _row(4, price="9.995e+06-1e+07")]
    valid, quarantined = validate_sales(rows, today=date(2026, 11, 1))
    assert quarantined == Counter({reason: 1})
    assert [s.sale_id for s in valid] == ["1", "3", "4"]  # the good rows are still used


def test_the_price_ceiling_is_documented_and_spares_the_simulated_catalogue():
    from node_agent.contract import MAX_SALE_PRICE, price_problem
    from sovereign.simulation.dealers import _CATALOGUE, _MAX_DISCOUNT, _PRICE_GROWTH

    assert MAX_SALE_PRICE == 10_000_000
    dearest = max(max(m.prices) for m in _CATALOGUE) * (1 + _PRICE_GROWTH) ** (2040 - 2020)
    cheapest = min(min(m.prices) for m in _CATALOGUE) * (1 - _MAX_DISCOUNT)
    assert all(price_problem(p) is None for p in (dearest, cheapest, MAX_SALE_PRICE, f"{MAX_SALE_PRICE:g}"))
    assert price_problem(MAX_SALE_PRICE + 1) == "absurd_price"
    assert price_problem(45_000_000, max_price=200_000_000) is None  # a branch pricing in won sets its own ceiling
    valid, quarantined = validate_sales([_row(1, price=45_000_000.0)], today=date(2026, 11, 1), max_price=2e8)
    assert len(valid) == 1 and not quarantined


def _careless_export(tmp_path, small_alliance):
    """The simulated branch B001 plus rows a careless DMS export writes, in REAL price columns."""
    import shutil

    db = tmp_path / "careless.db"
    shutil.copy(small_alliance / "B001.db", db)
    engine = create_engine(f"sqlite:///{db}")
    bad = {"'NaN'": "non_finite_price", "'nan'": "non_finite_price", "'inf'": "non_finite_price",
           "'-Infinity'": "non_finite_price", "9e999": "non_finite_price", "-9e999": "non_finite_price",
           "1e12": "absurd_price", "'1e12'": "absurd_price"}
    with engine.begin() as conn:
        columns = [r[1] for r in conn.execute(text("PRAGMA table_info(sales)"))]
        next_id = conn.execute(text("SELECT MAX(sale_id) FROM sales")).scalar() + 1
        template = dict(conn.execute(text("SELECT * FROM sales WHERE sale_price > 0 LIMIT 1")).mappings().one())
        for i, price in enumerate(bad):
            row = {**template, "sale_id": next_id + i, "vin": f"CARELESS{i:09d}"}
            values = ", ".join(price if c == "sale_price" else f":{c}" for c in columns)
            conn.execute(text(f"INSERT INTO sales ({', '.join(columns)}) VALUES ({values})"),
                         {c: v for c, v in row.items() if c != "sale_price"})
    engine.dispose()
    return f"sqlite:///{db}", Counter(bad.values())


@pytest.mark.parametrize("policy", ["domestic_dealer", "foreign_dealer"])  # raw prices; prices generalised to buckets
def test_a_careless_export_is_quarantined_and_counted_through_the_read(tmp_path, small_alliance, policy):
    clean = read_branch_dataset(f"sqlite:///{small_alliance / 'B001.db'}", example_policy(policy), forecast_request(),
                                key=b"k", today=date(2026, 11, 1))
    url, expected = _careless_export(tmp_path, small_alliance)
    data = read_branch_dataset(url, example_policy(policy), forecast_request(), key=b"k", today=date(2026, 11, 1))
    if policy == "foreign_dealer":
        assert {d.treatment.kind for d in data.decisions if d.field in ("sale_price", "list_price")} == {"generalise"}
    assert Counter(data.quarantined) - Counter(clean.quarantined) == expected
    assert data.valid_count == clean.valid_count and data.row_count == clean.row_count + sum(expected.values())
    assert data.series.units.tolist() == clean.series.units.tolist()  # the good rows are all still used
    assert not {"non_finite_price", "absurd_price"} & set(clean.quarantined)  # simulated data is unaffected


def test_egress_lets_the_new_quarantine_counts_leave(tmp_path, small_alliance):
    from common.wire import TrainReply
    from node_agent.egress import check_reply

    url, _ = _careless_export(tmp_path, small_alliance)
    data = read_branch_dataset(url, example_policy(), forecast_request(), key=b"k", today=date(2026, 11, 1))
    assert {"non_finite_price", "absurd_price"} <= set(data.quarantined)
    check_reply(TrainReply(status="ok", branch_id="B001", quarantined=data.quarantined), branch_id="B001")
