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


def test_127_nodes_append_at_once_to_a_postgresql_store():
    """127 simulated nodes, each with its own connection pool, append to one PostgreSQL store
    at once; every one of them also appends to a single shared chain, so appends to one
    chain really race. Every event is stored exactly once and every chain verifies."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import create_engine, select

    from lineage.store import events_table

    url = service_url("postgresql")
    LineageStore(url).close()  # schema in place before the rush
    run = uuid.uuid4().hex[:6]
    nodes = [Signer.generate(f"N{run}-{i:03d}") for i in range(127)]
    shared = Signer.generate(f"S{run}")
    per_node = 8

    def node_work(signer: Signer) -> list[str]:
        store = LineageStore(url)
        try:
            ids = [store.append(LineageEvent(kind=EventKind.DATA_READ, actor=signer.actor, job_id=f"conc-{run}", round=k,
                                             purpose="forecasting", dataset="sales", fields=["sales.sale_date"],
                                             row_count=k), signer).event_id for k in range(per_node)]
            ids.append(store.append(LineageEvent(kind=EventKind.EMISSION, actor=shared.actor, job_id=f"conc-{run}",
                                                 purpose="forecasting", details={"from": signer.actor}), shared).event_id)
            return ids
        finally:
            store.close()

    with ThreadPoolExecutor(max_workers=32) as pool:
        written = [i for ids in pool.map(node_work, nodes) for i in ids]
    assert len(written) == len(set(written)) == 127 * (per_node + 1)
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = Counter(r[0] for r in conn.execute(
            select(events_table.c.event_id).where(events_table.c.job_id == f"conc-{run}")))
    engine.dispose()
    assert set(stored) == set(written) and set(stored.values()) == {1}  # each present, once
    store = LineageStore(url)
    reports = store.verify({s.actor: s.public_key for s in [*nodes, shared]}, actors=[s.actor for s in [*nodes, shared]])
    assert all(r.ok for r in reports), next(r.fault for r in reports if not r.ok)
    assert {r.events for r in reports if r.actor != shared.actor} == {per_node}
    assert next(r for r in reports if r.actor == shared.actor).events == 127
    store.close()
