"""`verify` covers every column any compliance query filters on or reads.

Each column of an event row (kind, job_id, actor, recorded_at, dataset, purpose, round,
digest, model_version, ...) and of the field index (field, kind, job_id, seq, actor) is edited
directly in the database, the way someone with write access but without the node's key would;
`verify` must name the event. Where an edit can change a query's answer while every hash still
checks (a time respelled for the same instant, an index row moved to another job or kind, a
duplicated index row, index rows for an actor with no chain), the test shows the query lying
first, then verify catching it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from lineage import EventKind, LineageEvent, LineageStore, Signer
from lineage.store import events_table

ACTOR = "B001"
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
SEQ = 7  # the event every test edits: the data read of job-7, recorded at T0 + 7 days


@pytest.fixture
def store(tmp_path):
    store = LineageStore(f"sqlite:///{tmp_path / 'lineage.db'}")
    signer = Signer.load_or_create(ACTOR, tmp_path / "keys")
    for i in range(1, 11):
        read = i % 2 == 1
        store.append(LineageEvent(
            kind=EventKind.DATA_READ if read else EventKind.EMISSION, actor=ACTOR, job_id=f"job-{i}", round=i,
            purpose="forecasting", dataset="sales" if read else None, fields=["sales.sale_date", "sales.vin"] if read else [],
            row_count=100 + i, content_hash=f"{i:064x}" if read else None, policy_hash=f"{i + 50:064x}",
            digest=None if read else f"{i + 100:064x}", model_version=f"job-{i}/r{i}",
            recorded_at=T0 + timedelta(days=i), details={"i": i, "share": 0.5}), signer)
    engine = create_engine(store.url)
    yield store, signer, engine
    engine.dispose()
    store.close()


def sql(engine, statement: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def fault(store_: LineageStore, signer: Signer):
    reports = store_.verify({ACTOR: signer.public_key})
    faults = [r.fault for r in reports if r.fault is not None]
    assert faults, "verify passed a tampered store"
    return faults[0]


def assert_names_event(found, seq: int = SEQ) -> None:
    assert found.seq == seq and f"{ACTOR} event {seq} (" in found.message, found


def test_the_fixture_verifies(store):
    store_, signer, _ = store
    assert all(r.ok for r in store_.verify({ACTOR: signer.public_key}))


# Every column of an event row, with an edit of it. The value must be a different one: verify
# recomputes the hash over the row, and the signature covers the hash.
EVENT_EDITS = {
    "event_id": "'" + "e" * 32 + "'",
    "recorded_at": "'2026-11-07T00:00:01.000000Z'",
    "kind": "'emission'",
    "job_id": "'job-9'",
    "round": "99",
    "purpose": "'marketing'",
    "dataset": "'service'",
    "fields": """'["sales.sale_date"]'""",
    "row_count": "5",
    "content_hash": "'" + "c" * 64 + "'",
    "policy_hash": "NULL",
    "digest": "'" + "d" * 64 + "'",
    "model_version": "'job-9/r1'",
    "details": """'{"i": 7, "share": 0.0}'""",
    "prev_hash": "'" + "0" * 64 + "'",
    "event_hash": "'" + "f" * 64 + "'",
    "signer": "'" + "a" * 32 + "'",
    "signature": "'" + "ab" * 64 + "'",
}


def test_every_event_column_is_covered():
    assert set(EVENT_EDITS) | {"id", "actor", "seq"} == {c.name for c in events_table.columns}


@pytest.mark.parametrize("column", sorted(EVENT_EDITS))
def test_an_edited_event_column_is_named(store, column):
    store_, signer, engine = store
    sql(engine, f"UPDATE lineage_chain_events SET {column} = {EVENT_EDITS[column]} WHERE seq = {SEQ}")
    assert_names_event(fault(store_, signer))


def test_an_event_moved_to_another_actor_is_named(store):
    store_, signer, engine = store
    sql(engine, f"UPDATE lineage_chain_events SET actor = 'B002' WHERE seq = {SEQ}")
    found = fault(store_, signer)
    assert found.problem == "deleted" and f"event(s) {SEQ} before it are missing" in found.message
    sql(engine, f"UPDATE lineage_chain_events SET actor = 'b001' WHERE seq = {SEQ}")  # a case-insensitive database
    found = fault(store_, signer)
    assert found.problem == "deleted" and f"event(s) {SEQ} before it are missing" in found.message


def test_an_event_given_another_position_is_named(store):
    store_, signer, engine = store
    sql(engine, f"UPDATE lineage_chain_events SET seq = 70 WHERE seq = {SEQ}")
    found = fault(store_, signer)
    assert found.seq == SEQ + 1 and f"event(s) {SEQ} before it are missing" in found.message
    sql(engine, "UPDATE lineage_chain_events SET seq = 'seven' WHERE seq = 70")  # text sorts after every number
    found = fault(store_, signer)
    assert found.seq == SEQ + 1 and f"event(s) {SEQ} before it are missing" in found.message


# Values that make no event at all: verify names the row instead of crashing on it.
@pytest.mark.parametrize("column, value", [
    ("kind", "'DATA_READ'"), ("kind", "'gossip'"), ("recorded_at", "'yesterday'"), ("recorded_at", "'2026-13-45T00:00:00.000000Z'"),
    ("fields", "'not json'"), ("fields", """'{"a": 1}'"""), ("details", """'{"i": NaN}'"""), ("details", "'[1]'"),
    ("round", "'three'"), ("row_count", "1.5"), ("job_id", "X'6a6f622d37'"), ("digest", "42"),
])
def test_an_unreadable_column_is_named_not_crashed_on(store, column, value):
    store_, signer, engine = store
    sql(engine, f"UPDATE lineage_chain_events SET {column} = {value} WHERE seq = {SEQ}")
    found = fault(store_, signer)
    assert_names_event(found)
    assert found.problem == "edited"


DAY7 = T0 + timedelta(days=SEQ)


@pytest.mark.parametrize("spelling, since, until", [
    ("20261108T000000Z", DAY7, DAY7 + timedelta(days=1)),  # ISO basic format: sorts after every 2026-... time
    ("2026-11-07T15:00:00.000000-09:00", DAY7, DAY7 + timedelta(days=1)),  # the same instant, in Alaska time
    ("2026-11-08 00:00:00.000000Z", DAY7, DAY7 + timedelta(days=1)),  # a space for the T
    ("2026-11-08T00:00:00Z", DAY7, DAY7 + timedelta(seconds=0.5)),  # no microseconds
], ids=["basic-format", "other-zone", "space", "no-microseconds"])
def test_a_time_respelled_for_the_same_instant_is_named(store, spelling, since, until):
    """The hash covers the parsed instant, so it still checks; but the range queries compare
    the stored text, so the event drops out of a time window it belongs to."""
    store_, signer, engine = store
    assert [e.seq for e in store_.events(since=since, until=until)] == [SEQ]
    sql(engine, "UPDATE lineage_chain_events SET recorded_at = :t WHERE seq = :s", t=spelling, s=SEQ)
    assert store_.events(since=since, until=until) == []  # the query now lies about the window...
    found = fault(store_, signer)  # ...and verify names the event
    assert_names_event(found)
    assert found.problem == "edited" and "recorded_at" in found.message and spelling in found.message


# ------------------------------------------------------------------------ the field index
@pytest.mark.parametrize("column, value, query_lies", [
    ("job_id", "'job-X'", lambda s: s.jobs_using_field("sales.vin") == ["job-1", "job-3", "job-5", "job-9", "job-X"]),
    ("kind", "'emission'", lambda s: "job-7" not in s.jobs_using_field("sales.vin")),
    ("field", "'sales.sale_price'", lambda s: s.jobs_using_field("sales.sale_price") == ["job-7"]),
    ("seq", "8", lambda s: [e.seq for e in s.events(field="sales.vin")] == [1, 3, 5, 8, 9]),
    ("actor", "'B002'", lambda s: s.jobs_using_field("sales.vin", actor="B002") == ["job-7"]),
])
def test_an_edited_field_index_row_is_named(store, column, value, query_lies):
    """Edit event 7's sales.vin row of the index: the query lies, verify names event 7."""
    store_, signer, engine = store
    assert "job-7" in store_.jobs_using_field("sales.vin", actor=ACTOR)
    sql(engine, f"UPDATE lineage_chain_fields SET {column} = {value} WHERE seq = {SEQ} AND field = 'sales.vin'")
    assert query_lies(store_)
    found = fault(store_, signer)
    assert_names_event(found)
    assert found.problem == "edited" and "field index" in found.message and "sales.vin" in found.message


def test_a_field_index_row_for_no_event_is_caught(store):
    store_, signer, engine = store
    sql(engine, f"INSERT INTO lineage_chain_fields VALUES ('{ACTOR}', 11, 'sales.vin', 'data_read', 'job-X')")
    assert "job-X" in store_.jobs_using_field("sales.vin")
    found = fault(store_, signer)
    assert found.problem == "inserted" and found.seq == 11 and "does not exist" in found.message
    sql(engine, "UPDATE lineage_chain_fields SET seq = -1 WHERE seq = 11")
    assert fault(store_, signer).seq == -1


def test_field_index_rows_of_an_actor_without_a_chain_are_caught(store):
    store_, signer, engine = store
    sql(engine, "INSERT INTO lineage_chain_fields VALUES ('B009', 1, 'sales.vin', 'data_read', 'job-X')")
    assert "job-X" in store_.jobs_using_field("sales.vin")
    found = fault(store_, signer)
    assert found.actor == "B009" and found.problem == "inserted" and "no events in this store" in found.message


def test_a_duplicated_field_index_row_is_caught(store):
    """Without the primary key, a row added twice would cancel out of an XOR fingerprint."""
    store_, signer, engine = store
    sql(engine, "ALTER TABLE lineage_chain_fields RENAME TO old_fields")
    sql(engine, "CREATE TABLE lineage_chain_fields (actor VARCHAR(128), seq INTEGER, field VARCHAR(256), "
                "kind VARCHAR(32), job_id VARCHAR(128))")
    sql(engine, "INSERT INTO lineage_chain_fields SELECT actor, seq, field, kind, job_id FROM old_fields")
    for _ in range(2):
        sql(engine, f"INSERT INTO lineage_chain_fields VALUES ('{ACTOR}', {SEQ}, 'sales.vin', 'data_read', 'job-X')")
    assert "job-X" in store_.jobs_using_field("sales.vin")
    found = fault(store_, signer)
    assert_names_event(found)
    assert "job-X" in found.message and "x2" in found.message
