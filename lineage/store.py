"""The lineage store: append-only, hash-chained, signed; SQLite by default, any SQLAlchemy URL.

One store per node and one for the coordinator; a store may also hold many actors' chains
(a shared PostgreSQL store), each chain appended under a lock on its head row. The schema is
created and upgraded by Alembic (`lineage/migrations`). Indexed columns serve the compliance
queries; `verify` covers every column a query filters on or reads:

- each event row: every column is in its signed hash (`chain.HASHED`), and each must hold
  exactly the value the hash covers: the time in its one spelling (the range queries compare
  the stored text), a known kind, numbers that are numbers, JSON that is JSON;
- the field index (`lineage_chain_fields`, which `events(field=)` and `jobs_using_field` read):
  for each event, its rows must be exactly the event's fields with the event's kind and job,
  and no row may point at an event that does not exist;
- the head row (the anchor against deleting the newest events) and, from outside the store,
  the heads other actors recorded (`lineage.anchors`).
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from common.db import schema_revision, tune_sqlite, upgrade_schema, writer
from lineage.chain import ChainFault, ChainReport, Problem, compute_hash, verify_chain
from lineage.models import GENESIS, EventKind, LineageEvent, format_time
from lineage.signing import Ed25519PublicKey, Signer, key_id, load_public_key, public_pem

SCHEMA_REVISION = "0001_signed_chain"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "lineage_alembic_version"
APPEND_ATTEMPTS = 20

metadata = MetaData()
events_table = Table(
    "lineage_chain_events", metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("actor", String(128)), Column("seq", Integer), Column("event_id", String(32)),
    Column("recorded_at", String(32)), Column("kind", String(32)), Column("job_id", String(128)),
    Column("round", Integer), Column("purpose", String(64)), Column("dataset", String(256)),
    Column("fields", Text), Column("row_count", Integer), Column("content_hash", String(64)),
    Column("policy_hash", String(64)), Column("digest", String(64)), Column("model_version", String(128)),
    Column("details", Text), Column("prev_hash", String(64)), Column("event_hash", String(64)),
    Column("signer", String(32)), Column("signature", String(128)),
)
fields_table = Table(
    "lineage_chain_fields", metadata,
    Column("actor", String(128)), Column("seq", Integer), Column("field", String(256)),
    Column("kind", String(32)), Column("job_id", String(128)),
)
heads_table = Table("lineage_chain_heads", metadata, Column("actor", String(128)), Column("seq", Integer),
                    Column("event_hash", String(64)))
signers_table = Table("lineage_chain_signers", metadata, Column("key_id", String(32)), Column("actor", String(128)),
                      Column("public_key", Text))

_COLUMNS = [c.name for c in events_table.columns if c.name != "id"]


class LineageStoreError(RuntimeError):
    """The store cannot be opened or written; the message says why in one line."""


class _BadRow(Exception):
    """A stored event row that does not hold what a sealed event can hold (found by verify)."""

    def __init__(self, seq, event_id, message: str) -> None:
        super().__init__(message)
        self.seq, self.event_id, self.message = seq, event_id, message


def current_revision(engine: Engine) -> str | None:
    return schema_revision(engine, VERSION_TABLE)


def upgrade(engine: Engine) -> None:
    """Bring the store's schema to the newest Alembic revision (a no-op when it is there)."""
    upgrade_schema(engine, str(MIGRATIONS), VERSION_TABLE, SCHEMA_REVISION)


class LineageStore:
    """Append and query lineage events; verify the chains they form."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open (and create or upgrade) a store; with `create=False`, only open an existing
        store at the current schema, so reading never writes to whatever database it is given."""
        self.url = url
        self._engine: Engine = tune_sqlite(create_engine(url, pool_pre_ping=not url.startswith("sqlite")))
        try:
            if create:
                upgrade(self._engine)
            else:
                found = current_revision(self._engine)
                if found != SCHEMA_REVISION:
                    raise LineageStoreError(f"{url}: not a lineage store" if found is None else
                                            f"{url}: lineage schema {found}, this version reads {SCHEMA_REVISION}")
        except LineageStoreError:
            self._engine.dispose()
            raise
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot open"
            self._engine.dispose()
            raise LineageStoreError(f"cannot open lineage store {url}: {exc.__class__.__name__}: {exc}".splitlines()[0]) from None
        self._known_signers: set[str] = set()

    # ------------------------------------------------------------------ writing
    def append(self, event: LineageEvent, signer: Signer) -> LineageEvent:
        """Seal `event` into `signer.actor`'s chain (next seq, link, hash, signature) and store it."""
        return self.append_many([event], signer)[0]

    def append_many(self, events: list[LineageEvent], signer: Signer) -> list[LineageEvent]:
        """Seal and store several events of one actor in one transaction (the fast path)."""
        for event_ in events:
            if event_.actor != signer.actor:
                raise ValueError(f"event of actor {event_.actor!r} cannot be signed by {signer.actor!r}")
        self._register(signer)
        for attempt in range(APPEND_ATTEMPTS):
            try:
                with writer(self._engine) as conn:
                    return self._append_locked(conn, events, signer)
            except (IntegrityError, OperationalError):  # a concurrent writer took the head: take the new one
                if attempt == APPEND_ATTEMPTS - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def _append_locked(self, conn: Connection, events: list[LineageEvent], signer: Signer) -> list[LineageEvent]:
        head = conn.execute(
            select(heads_table.c.seq, heads_table.c.event_hash).where(heads_table.c.actor == signer.actor).with_for_update()
        ).first()
        if head is None:
            conn.execute(insert(heads_table).values(actor=signer.actor, seq=0, event_hash=GENESIS))
            seq, prev = 0, GENESIS
        else:
            seq, prev = head
        sealed = []
        for event_ in events:
            seq += 1
            linked = event_.model_copy(update={"seq": seq, "prev_hash": prev, "signer": signer.key_id,
                                               "details": plain_json(event_.details)})
            digest = compute_hash(linked)
            sealed.append(linked.model_copy(update={"event_hash": digest, "signature": signer.sign(bytes.fromhex(digest))}))
            prev = digest
        conn.execute(insert(events_table), [_to_row(e) for e in sealed])
        field_rows = [{"actor": e.actor, "seq": e.seq, "field": f, "kind": e.kind.value, "job_id": e.job_id}
                      for e in sealed for f in dict.fromkeys(e.fields)]
        if field_rows:
            conn.execute(insert(fields_table), field_rows)
        conn.execute(update(heads_table).where(heads_table.c.actor == signer.actor).values(seq=seq, event_hash=prev))
        return sealed

    def _register(self, signer: Signer) -> None:
        """Record the signer's public key in the store (informational: verify trusts keys given to it)."""
        if signer.key_id in self._known_signers:
            return
        with writer(self._engine) as conn:
            known = conn.execute(select(signers_table.c.key_id).where(signers_table.c.key_id == signer.key_id)).first()
            if known is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(signers_table).values(key_id=signer.key_id, actor=signer.actor,
                                                                  public_key=public_pem(signer.public_key)))
                except IntegrityError:
                    pass  # registered concurrently
        self._known_signers.add(signer.key_id)

    # ------------------------------------------------------------------ querying
    def events(
        self, *, actor: str | None = None, job_id: str | None = None, kind: EventKind | None = None,
        dataset: str | None = None, field: str | None = None, purpose: str | None = None,
        since: datetime | None = None, until: datetime | None = None, digest: str | None = None,
        model_version: str | None = None, limit: int | None = None,
    ) -> list[LineageEvent]:
        """Events matching every filter given, oldest first. Each filter is served by an index.

        Sorted here rather than by the database: an ORDER BY on time tempts SQLite's planner
        into walking the whole time index instead of the selective one.
        """
        query = select(events_table)
        for column, value in (("actor", actor), ("job_id", job_id), ("dataset", dataset), ("purpose", purpose),
                              ("digest", digest), ("model_version", model_version)):
            if value is not None:
                query = query.where(events_table.c[column] == value)
        if kind is not None:
            query = query.where(events_table.c.kind == EventKind(kind).value)
        if since is not None:
            query = query.where(events_table.c.recorded_at >= format_time(since))
        if until is not None:
            query = query.where(events_table.c.recorded_at < format_time(until))
        if field is not None:
            named = select(fields_table.c.seq).where(fields_table.c.field == field, fields_table.c.actor == events_table.c.actor,
                                                     fields_table.c.seq == events_table.c.seq)
            query = query.where(named.exists())
        if limit is not None:
            query = query.order_by(events_table.c.recorded_at, events_table.c.actor, events_table.c.seq).limit(limit)
        with self._engine.connect() as conn:
            found = [_from_row(r) for r in conn.execute(query).mappings()]
        return sorted(found, key=lambda e: (e.recorded_at, e.actor, e.seq or 0))

    def jobs_using_field(self, field: str, *, actor: str | None = None) -> list[str]:
        """Which jobs read field `table.column` (at node `actor`)?"""
        query = select(fields_table.c.job_id).where(fields_table.c.field == field,
                                                    fields_table.c.kind == EventKind.DATA_READ.value)
        if actor is not None:
            query = query.where(fields_table.c.actor == actor)
        with self._engine.connect() as conn:
            return sorted({r[0] for r in conn.execute(query.distinct())})

    def emissions(self, actor: str, job_id: str) -> list[LineageEvent]:
        """What left node `actor` in job `job_id`: every reply it sent, with digest and bytes."""
        return self.events(actor=actor, job_id=job_id, kind=EventKind.EMISSION)

    def actors(self) -> list[str]:
        with self._engine.connect() as conn:
            chained = {r[0] for r in conn.execute(select(heads_table.c.actor))}
            chained |= {r[0] for r in conn.execute(select(events_table.c.actor).distinct())}
        return sorted(chained)

    def head(self, actor: str) -> tuple[int, str]:
        """(seq, hash) of the actor's newest event: what it publishes so truncation shows."""
        with self._engine.connect() as conn:
            row = conn.execute(select(heads_table.c.seq, heads_table.c.event_hash).where(heads_table.c.actor == actor)).first()
        return (row[0], row[1]) if row else (0, GENESIS)

    def count(self) -> int:
        with self._engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(events_table)).scalar_one()

    def stored_public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The keys the store itself lists: a fallback only, since whoever edits rows can edit these."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(signers_table.c.actor, signers_table.c.public_key)).all()
        return {actor: load_public_key(pem) for actor, pem in rows}

    # ------------------------------------------------------------------ verifying
    def verify(
        self, keys: dict[str, Ed25519PublicKey] | None = None, *, actors: Iterable[str] | None = None,
        anchors: dict[str, list[tuple[int, str]]] | None = None,
    ) -> list[ChainReport]:
        """Check each actor's chain against its public key (from `keys`, else the store's own list).

        Also catches a head row ahead of the chain (newest events deleted), a row whose columns
        say something other than what its hash covers (e.g. the time respelled so range queries
        miss it), and a field index that no longer matches the events (edited to hide or invent
        a field use, or to move one to another job or kind).
        """
        given = dict(keys or {})
        keys = {**self.stored_public_keys(), **given}
        reports = []
        for actor in (list(actors) if actors is not None else self.actors()):
            public = keys.get(actor)
            if public is None:
                reports.append(ChainReport.model_validate({
                    "actor": actor, "events": 0, "head_seq": 0, "head_hash": GENESIS,
                    "fault": {"actor": actor, "seq": None, "event_id": None, "problem": "unknown_signer",
                              "message": f"{actor}: no public key to verify its signatures against"}}))
                continue
            head_seq, head_hash = self.head(actor)
            published = list((anchors or {}).get(actor, []))
            if head_seq:
                published.append((head_seq, head_hash))
            report = self._verify_chain(actor, public, published)
            if report.ok:
                report = self._check_field_index(actor, report)
            reports.append(report.model_copy(update={"key_source": "given" if actor in given else "store"}))
        if actors is None:
            reports.extend(self._orphan_index_actors())
        return reports

    def _verify_chain(self, actor: str, public: Ed25519PublicKey, anchors: list[tuple[int, str]]) -> ChainReport:
        """`verify_chain` over the stored rows, each first checked to hold what a sealed event
        can hold; the first row that does not is named as edited."""
        last: list[LineageEvent] = []

        def rows() -> Iterator[LineageEvent]:
            query = select(events_table).where(events_table.c.actor == actor).order_by(events_table.c.seq)
            with self._engine.connect() as conn:
                for row in conn.execution_options(yield_per=5000).execute(query).mappings():
                    event_ = _checked_from_row(row)
                    last[:] = [event_]
                    yield event_

        try:
            return verify_chain(actor, rows(), public, key_id(public), anchors=anchors,
                                lookup_by_hash=lambda h: self._seq_of(actor, h))
        except _BadRow as bad:
            # verify_chain asks for a row only once every earlier one verified: they are the chain so far.
            count = self._count(actor, last[0].seq) if last else 0
            return ChainReport(
                actor=actor, events=count, head_seq=last[0].seq if last else 0,
                head_hash=last[0].event_hash if last else GENESIS,
                fault=ChainFault(actor=actor, seq=bad.seq if isinstance(bad.seq, int) else None,
                                 event_id=bad.event_id if isinstance(bad.event_id, str) else None, problem="edited",
                                 message=f"{actor} event {bad.seq} ({bad.event_id}): {bad.message} (edited)"),
            )

    def _count(self, actor: str, up_to: int) -> int:
        with self._engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(events_table).where(
                events_table.c.actor == actor, events_table.c.seq <= up_to)).scalar_one()

    def _chain(self, actor: str) -> Iterator[LineageEvent]:
        query = select(events_table).where(events_table.c.actor == actor).order_by(events_table.c.seq)
        with self._engine.connect() as conn:
            for row in conn.execution_options(yield_per=5000).execute(query).mappings():
                yield _from_row(row)

    def scan(self, actor: str | None = None) -> Iterator[LineageEvent]:
        """Every event (of `actor`), streamed in chain order: for checks over a whole store."""
        actors = [actor] if actor is not None else self.actors()
        for name in actors:
            yield from self._chain(name)

    def hashes_at(self, actor: str, seqs: Iterable[int]) -> dict[int, str]:
        """The event hash the actor's chain holds at each of `seqs` (those it has)."""
        wanted = sorted({s for s in seqs if isinstance(s, int)})
        found: dict[int, str] = {}
        with self._engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                found.update(conn.execute(select(events_table.c.seq, events_table.c.event_hash).where(
                    events_table.c.actor == actor, events_table.c.seq.in_(wanted[i:i + 500]))).tuples().all())
        return found

    def last_seq(self, actor: str) -> int:
        """The highest position among the actor's stored events (0: none), whatever the head row says."""
        with self._engine.connect() as conn:
            return conn.execute(select(func.max(events_table.c.seq)).where(events_table.c.actor == actor)).scalar() or 0

    def _seq_of(self, actor: str, event_hash: str | None) -> int | None:
        """Only asked once a chain is found broken, so a scan of that actor's events is fine."""
        if event_hash is None:
            return None
        with self._engine.connect() as conn:
            return conn.execute(select(events_table.c.seq).where(events_table.c.actor == actor,
                                                                 events_table.c.event_hash == event_hash)).scalar()

    def _check_field_index(self, actor: str, report: ChainReport) -> ChainReport:
        """The index rows of each event must be exactly its (field, kind, job) triples, the
        chain having just shown those columns are what the event signed. Both sides stream in
        seq order (two connections: some drivers cannot interleave two open results on one)."""
        def fault(problem: Problem, seq, event_id, message: str) -> ChainReport:
            return report.model_copy(update={"fault": ChainFault(
                actor=actor, seq=seq if isinstance(seq, int) else None, event_id=event_id, problem=problem,
                message=f"{message} (field index rows edited, added or deleted)")})

        events_query = (select(events_table.c.seq, events_table.c.event_id, events_table.c.kind, events_table.c.job_id,
                               events_table.c.fields).where(events_table.c.actor == actor).order_by(events_table.c.seq))
        index_query = (select(fields_table.c.seq, fields_table.c.field, fields_table.c.kind, fields_table.c.job_id)
                       .where(fields_table.c.actor == actor).order_by(fields_table.c.seq))
        with self._engine.connect() as events_conn, self._engine.connect() as index_conn:
            signed = ((seq, event_id, kind, Counter((f, kind, job_id) for f in dict.fromkeys(json.loads(fields))))
                      for seq, event_id, kind, job_id, fields in
                      events_conn.execution_options(yield_per=5000).execute(events_query))
            indexed = itertools.groupby(index_conn.execution_options(yield_per=5000).execute(index_query),
                                        key=lambda r: r[0])
            pending = next(indexed, None)
            for seq, event_id, kind, expected in signed:
                if pending is not None and (not isinstance(pending[0], int) or pending[0] < seq):
                    return fault("inserted", pending[0], None,
                                 f"{actor}: the field index lists fields of event {pending[0]!r}, which does not exist")
                found: Counter = Counter()
                if pending is not None and pending[0] == seq:
                    found = Counter((field, row_kind, job) for _, field, row_kind, job in pending[1])
                    pending = next(indexed, None)
                if found != expected:
                    return fault("edited", seq, event_id, f"{actor} event {seq} ({kind}, {event_id}): the field index "
                                 f"does not match the event's fields: {_index_difference(expected, found)}")
            if pending is not None:
                return fault("inserted", pending[0], None,
                             f"{actor}: the field index lists fields of event {pending[0]!r}, which does not exist")
        return report

    def _orphan_index_actors(self) -> list[ChainReport]:
        """Index rows of an actor with no chain here would answer `jobs_using_field` unchecked."""
        with self._engine.connect() as conn:
            indexed = {r[0] for r in conn.execute(select(fields_table.c.actor).distinct())}
        return [ChainReport(actor=str(actor), events=0, head_seq=0, head_hash=GENESIS, fault=ChainFault(
                    actor=str(actor), seq=None, event_id=None, problem="inserted",
                    message=f"{actor}: the field index lists field uses of {actor}, who has no events in this store "
                            "(field index rows added)"))
                for actor in sorted(indexed - set(self.actors()), key=str)]

    def close(self) -> None:
        self._engine.dispose()


def plain_json(value):
    """`value` as JSON will give it back (numpy numbers to floats, NaN and infinities to
    strings, unknown objects to their text), so the hash of what is stored is the hash sealed."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):  # int and numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # float and numpy floats
        number = float(value)
        return number if math.isfinite(number) else str(number)
    return str(value)


def _index_difference(expected: Counter, found: Counter) -> str:
    def show(rows: Counter) -> str:
        return ", ".join(f"{f} ({k}, {j})" + (f" x{n}" if n > 1 else "") for (f, k, j), n in sorted(rows.items(), key=str))

    missing, added = expected - found, found - expected
    return "; ".join(part for part in (f"missing {show(missing)}" if missing else "",
                                       f"not in the event {show(added)}" if added else "") if part)


_STRINGS = ("event_id", "actor", "kind", "job_id", "purpose", "fields", "details", "prev_hash", "event_hash", "signer",
            "signature", "recorded_at")
_OPTIONAL_STRINGS = ("dataset", "content_hash", "policy_hash", "digest", "model_version")
_KINDS = frozenset(k.value for k in EventKind)


def _strict_json(text: str):
    def no_constant(name: str):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=no_constant)


def _checked_from_row(row) -> LineageEvent:
    """The event a stored row holds, or `_BadRow` saying why the row is not what a sealed event
    stores. Every column is in the event's hash, but the hash is computed over the parsed row:
    a column must also hold that value in the one form the store writes, since queries compare
    the stored form (a time respelled for the same instant would hide from a time range)."""
    def bad(message: str) -> _BadRow:
        return _BadRow(row["seq"], row["event_id"], message)

    for column in _STRINGS:
        if not isinstance(row[column], str):
            raise bad(f"column {column} is not text")
    for column in _OPTIONAL_STRINGS:
        if row[column] is not None and not isinstance(row[column], str):
            raise bad(f"column {column} is not text")
    for column, optional in (("seq", False), ("round", True), ("row_count", True)):
        value = row[column]
        if not (optional and value is None) and (not isinstance(value, int) or isinstance(value, bool)):
            raise bad(f"column {column} is not a whole number")
    if row["kind"] not in _KINDS:
        raise bad(f"column kind holds {row['kind']!r}, not an event kind")
    try:
        moment = datetime.fromisoformat(row["recorded_at"].replace("Z", "+00:00"))
    except ValueError:
        raise bad("column recorded_at is not a time") from None
    if moment.tzinfo is None or format_time(moment) != row["recorded_at"]:
        raise bad(f"column recorded_at is spelled {row['recorded_at']!r}, not "
                  f"{format_time(moment) if moment.tzinfo else 'a UTC time'!r} (time range queries compare the stored text)")
    try:
        fields, details = _strict_json(row["fields"]), _strict_json(row["details"])
    except ValueError:
        raise bad("column fields or details is not JSON") from None
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise bad("column fields is not a list of field names")
    if not isinstance(details, dict):
        raise bad("column details is not a JSON object")
    data = {c: row[c] for c in _COLUMNS}
    return LineageEvent.model_construct(**{**data, "fields": fields, "details": details, "recorded_at": moment,
                                           "kind": EventKind(data["kind"])})


def _to_row(event_: LineageEvent) -> dict:
    row = event_.model_dump(mode="python", include=set(_COLUMNS))
    row["kind"] = event_.kind.value
    row["recorded_at"] = format_time(event_.recorded_at)
    row["fields"] = json.dumps(event_.fields, ensure_ascii=False)
    row["details"] = json.dumps(event_.details, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return row


def _from_row(row) -> LineageEvent:
    data = {c: row[c] for c in _COLUMNS}
    data["fields"] = json.loads(data["fields"])
    data["details"] = json.loads(data["details"])
    data["recorded_at"] = datetime.fromisoformat(data["recorded_at"].replace("Z", "+00:00"))
    return LineageEvent.model_construct(**{**data, "kind": EventKind(data["kind"])})
