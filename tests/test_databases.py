"""Real PostgreSQL and MariaDB: a branch database and a lineage store on each server."""

import uuid

import pytest

from lineage import EventKind, LineageEvent, LineageStore, Signer
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
    actor = f"B-{uuid.uuid4().hex[:8]}"  # the server keeps earlier runs' chains: a fresh actor each run
    signer = Signer.generate(actor)
    for rnd in (1, 2):
        store.append(LineageEvent(kind=EventKind.DATA_READ, actor=actor, job_id=job_id, round=rnd,
                                  purpose="forecasting", fields=["sales.sale_date"], row_count=10,
                                  details={"k": rnd, "share": 0.1 * rnd}), signer)
    events = store.events(job_id=job_id)
    assert [e.round for e in events] == [1, 2] and events[1].details == {"k": 2, "share": 0.2}
    assert events[0].recorded_at.tzinfo is not None
    assert store.jobs_using_field("sales.sale_date", actor=actor) == [job_id]
    report, = store.verify({actor: signer.public_key}, actors=[actor])
    assert report.ok and report.events == 2, report.fault
    store.close()
