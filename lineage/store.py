"""A SQLAlchemy-backed lineage store: SQLite embedded, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import json
from datetime import timezone

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
)
from sqlalchemy.engine import Engine

from lineage.models import EventKind, LineageEvent

metadata = MetaData()

lineage_events = Table(
    "lineage_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False, index=True),
    Column("actor", String(128), nullable=False, index=True),
    Column("job_id", String(128), nullable=False, index=True),
    Column("round", Integer),
    Column("purpose", String(64), nullable=False),
    Column("dataset", String(256)),
    Column("fields", JSON, nullable=False),
    Column("row_count", Integer),
    Column("content_hash", String(64)),
    Column("policy_hash", String(64)),
    Column("details", Text, nullable=False),
)


class LineageStore:
    """Append and query lineage events. One store per node and one for the coordinator."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine = create_engine(url)
        metadata.create_all(self._engine)

    def append(self, event: LineageEvent) -> LineageEvent:
        row = event.model_dump(mode="python")
        row["kind"] = event.kind.value
        row["details"] = json.dumps(event.details, sort_keys=True, default=str)
        with self._engine.begin() as conn:
            conn.execute(insert(lineage_events), [row])
        return event

    def events(
        self, *, job_id: str | None = None, kind: EventKind | None = None, actor: str | None = None
    ) -> list[LineageEvent]:
        query = select(lineage_events).order_by(lineage_events.c.seq)
        if job_id is not None:
            query = query.where(lineage_events.c.job_id == job_id)
        if kind is not None:
            query = query.where(lineage_events.c.kind == kind.value)
        if actor is not None:
            query = query.where(lineage_events.c.actor == actor)
        with self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._to_event(dict(r)) for r in rows]

    def close(self) -> None:
        self._engine.dispose()

    @staticmethod
    def _to_event(row: dict) -> LineageEvent:
        row.pop("seq", None)
        row["details"] = json.loads(row["details"])
        if row["recorded_at"].tzinfo is None:  # SQLite drops the zone; we always store UTC
            row["recorded_at"] = row["recorded_at"].replace(tzinfo=timezone.utc)
        return LineageEvent(**row)
