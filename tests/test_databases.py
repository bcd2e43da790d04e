"""Real PostgreSQL and MariaDB: a branch database and a lineage store on each server."""

import uuid

import pytest

from lineage import EventKind, LineageEvent, LineageStore
from node_agent.data import read_branch_dataset
from sovereign.simulation.dealers import generate_sales, plan_alliance, write_branch_db
from tests.conftest import example_policy, forecast_request, service_url


@pytest.mark.parametrize("service", ["postgresql", "mariadb"])
def test_branch_database_on_a_real_server(service):
    url = service_url(service)
    profile = plan_alliance(5, 4)[1]
    rows = generate_sales(profile, 4)
    write_branch_db(url, profile, rows)
    data = read_branch_dataset(url, example_policy(), forecast_request(), key=b"node-key")
    assert data.row_count == len(rows)
    assert data.valid_count + sum(data.quarantined.values()) == len(rows)
    assert {"unparseable_date", "future_sale_date", "negative_price", "duplicate_vin"} <= set(data.quarantined)
    assert data.series.units.sum() == data.valid_count


@pytest.mark.parametrize("service", ["postgresql", "mariadb"])
def test_lineage_store_on_a_real_server(service):
    url = service_url(service)
    store = LineageStore(url)
    job_id = f"db-test-{uuid.uuid4().hex[:8]}"
    for rnd in (1, 2):
        store.append(LineageEvent(kind=EventKind.DATA_READ, actor="B001", job_id=job_id, round=rnd,
                                  purpose="forecasting", fields=["sale_date"], row_count=10, details={"k": rnd}))
    events = store.events(job_id=job_id)
    assert [e.round for e in events] == [1, 2] and events[1].details == {"k": 2}
    assert events[0].recorded_at.tzinfo is not None
    store.close()
