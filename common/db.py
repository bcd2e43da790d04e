"""SQLite as a small transactional store: WAL, and write transactions that take the write
lock up front (BEGIN IMMEDIATE) so concurrent writers queue instead of failing half-way.
Other databases need none of this and are left alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine


def tune_sqlite(engine: Engine) -> Engine:
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we say BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000", "cache_size=-65536"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("writer") else "BEGIN")

    return engine


@contextmanager
def writer(engine: Engine) -> Iterator[Connection]:
    """A write transaction (on SQLite: holding the write lock from its first statement)."""
    with engine.connect() as conn:
        conn.info["writer"] = True
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info.pop("writer", None)
