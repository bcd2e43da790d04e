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
    data = read_branch_dataset(f"sqlite:///{small_alliance / 'B001.db'}", example_policy(), forecast_request(), key=b"k")
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
