"""Tamper evidence: a store edited, deleted from, reordered or inserted into (by someone with
write access to the database but not the node's key) fails `verify`, naming the event."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from lineage import EventKind, LineageEvent, LineageStore, Signer, compute_hash
from lineage.store import _from_row, events_table

ACTOR = "B001"


@pytest.fixture
def store(tmp_path):
    store = LineageStore(f"sqlite:///{tmp_path / 'lineage.db'}")
    signer = Signer.load_or_create(ACTOR, tmp_path / "keys")
    for i in range(1, 21):
        store.append(LineageEvent(kind=EventKind.DATA_READ if i % 2 else EventKind.EMISSION, actor=ACTOR,
                                  job_id=f"job-{i % 3}", round=i, purpose="forecasting", dataset="sales",
                                  fields=["sales.sale_date", "sales.vin"] if i % 2 else [], row_count=100 + i,
                                  digest=None if i % 2 else f"{i:064x}", details={"i": i, "share": 0.1 * i}), signer)
    yield store, signer, create_engine(store.url)
    store.close()


def fault(store: LineageStore, signer: Signer, **kw):
    report, = store.verify({ACTOR: signer.public_key}, **kw)
    return report.fault


def sql(engine, statement: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def test_an_untouched_store_verifies(store):
    store_, signer, _ = store
    report, = store_.verify({ACTOR: signer.public_key})
    assert report.ok and report.events == 20 and report.head_seq == 20 and report.key_source == "given"


@pytest.mark.parametrize("statements, problem, seq, says", [
    (["UPDATE lineage_chain_events SET row_count = 5 WHERE seq = 7"], "edited", 7, "(edited)"),
    (["DELETE FROM lineage_chain_events WHERE seq = 7"], "deleted", 8, "event(s) 7 before it are missing"),
    (["UPDATE lineage_chain_events SET seq = -1 WHERE seq = 7", "UPDATE lineage_chain_events SET seq = 7 WHERE seq = 8",
      "UPDATE lineage_chain_events SET seq = 8 WHERE seq = -1"], "reordered", 7, "(reordered)"),
], ids=["edited", "deleted", "reordered"])
def test_an_edited_deleted_or_reordered_row_is_named(store, statements, problem, seq, says):
    store_, signer, engine = store
    for statement in statements:
        sql(engine, statement)
    found = fault(store_, signer)
    assert (found.problem, found.seq) == (problem, seq) and f"event {seq} (" in found.message and says in found.message


def test_an_edit_with_recomputed_hashes_still_fails_on_the_signature(store):
    """The attacker re-hashes the edited event and re-links every later one, but cannot sign."""
    store_, signer, engine = store
    sql(engine, "UPDATE lineage_chain_events SET details = :d WHERE seq = 7", d=json.dumps({"i": 7, "share": 0.0}))
    with engine.begin() as conn:
        rows = [_from_row(r) for r in conn.execute(events_table.select().order_by(events_table.c.seq)).mappings()]
        prev = rows[5].event_hash
        for event in rows[6:]:
            rehashed = event.model_copy(update={"prev_hash": prev})
            digest = compute_hash(rehashed)
            conn.execute(text("UPDATE lineage_chain_events SET prev_hash = :p, event_hash = :h WHERE seq = :s"),
                         {"p": prev, "h": digest, "s": event.seq})
            prev = digest
        conn.execute(text("UPDATE lineage_chain_heads SET event_hash = :h"), {"h": prev})
    found = fault(store_, signer)
    assert (found.problem, found.seq) == ("bad_signature", 7)


def test_an_inserted_row_is_named(store, tmp_path):
    """Forged by a key that is not the node's: appended at the end, or slipped in the middle."""
    store_, signer, engine = store
    forger = Signer.generate(ACTOR)
    forged = LineageStore(store_.url)
    forged.append(LineageEvent(kind=EventKind.EMISSION, actor=ACTOR, job_id="job-1", purpose="forecasting",
                               details={"destination": "elsewhere"}), forger)
    found = fault(store_, signer)
    assert (found.problem, found.seq) == ("unknown_signer", 21)
    # In the middle: shift later events up and forge event 7, linked and hashed correctly.
    sql(engine, "DELETE FROM lineage_chain_events WHERE seq = 21")
    sql(engine, "UPDATE lineage_chain_events SET seq = seq + 1000 WHERE seq >= 7")
    sql(engine, "UPDATE lineage_chain_events SET seq = seq - 999 WHERE seq >= 1000")
    with engine.begin() as conn:
        sixth = _from_row(conn.execute(events_table.select().where(events_table.c.seq == 6)).mappings().one())
    fake = LineageEvent(kind=EventKind.EMISSION, actor=ACTOR, job_id="job-1", purpose="forecasting", seq=7,
                        recorded_at=sixth.recorded_at, prev_hash=sixth.event_hash, signer=signer.key_id)
    digest = compute_hash(fake)
    with engine.begin() as conn:
        conn.execute(events_table.insert(), [{
            **{c: getattr(fake, c) for c in ("event_id", "actor", "seq", "job_id", "purpose", "prev_hash", "signer")},
            "recorded_at": sixth.recorded_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "kind": "emission", "fields": "[]",
            "details": "{}", "event_hash": digest, "signature": forger.sign(bytes.fromhex(digest)),
        }])
    found = fault(store_, signer)
    assert (found.problem, found.seq) == ("bad_signature", 7)


def test_deleting_the_newest_events_is_caught_by_the_published_head(store):
    store_, signer, engine = store
    head = store_.head(ACTOR)
    sql(engine, "DELETE FROM lineage_chain_fields WHERE seq > 17")
    sql(engine, "DELETE FROM lineage_chain_events WHERE seq > 17")
    assert fault(store_, signer).problem == "truncated"  # the head row still says 20
    sql(engine, "UPDATE lineage_chain_heads SET seq = 17, event_hash = "
                "(SELECT event_hash FROM lineage_chain_events WHERE seq = 17)")
    assert fault(store_, signer) is None  # a careful attacker fixed the head row too...
    found = fault(store_, signer, anchors={ACTOR: [head]})  # ...but the coordinator kept the head it was sent
    assert found.problem == "truncated" and "published a head at event 20" in found.message


def test_a_field_index_edited_to_hide_a_use_is_caught(store):
    store_, signer, engine = store
    assert store_.jobs_using_field("sales.vin", actor=ACTOR) == ["job-0", "job-1", "job-2"]
    sql(engine, "DELETE FROM lineage_chain_fields WHERE job_id = 'job-1' AND field = 'sales.vin'")
    assert store_.jobs_using_field("sales.vin", actor=ACTOR) == ["job-0", "job-2"]  # the query now lies...
    found = fault(store_, signer)
    assert found.problem == "edited" and "field index" in found.message  # ...and verify says so


def test_a_swapped_signing_key_fails_against_the_published_key(store):
    """An attacker re-signs the whole chain with their own key and lists it in the store."""
    store_, signer, engine = store
    attacker = Signer.generate(ACTOR)
    copy = LineageStore(store_.url.replace("lineage.db", "copy.db"))
    for event in store_.events():
        copy.append(event.model_copy(update={"seq": None, "prev_hash": None, "event_hash": None, "signature": None}), attacker)
    report, = copy.verify()
    assert report.ok and report.key_source == "store"  # self-consistent against its own listed key
    report, = copy.verify({ACTOR: signer.public_key})
    assert report.fault.problem == "unknown_signer" and report.fault.seq == 1


def test_the_schema_is_made_by_alembic_and_is_at_its_head(tmp_path):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from lineage.store import MIGRATIONS, SCHEMA_REVISION

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION
    store = LineageStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    engine = create_engine(store.url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM lineage_alembic_version")).scalar() == SCHEMA_REVISION
        indexes = {r[1] for r in conn.execute(text("PRAGMA index_list('lineage_chain_events')"))}
    assert {"ix_lineage_chain_actor_job_kind", "ix_lineage_chain_time", "ix_lineage_chain_model_version"} <= indexes
    LineageStore(store.url).close()  # opening again is a no-op, not a second migration
    engine.dispose()
