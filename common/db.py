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


class DatabaseUrlError(ValueError):
    """A database the caller names that cannot be opened for reading; the message says why."""


def read_only_url(value: str) -> str:
    """A SQLAlchemy URL to read `value` without ever writing it: a plain file path or a
    `sqlite:///` URL opens that existing SQLite file read-only (a missing one is an error,
    never an empty new database); any other URL is passed through."""
    from pathlib import Path

    if "://" not in value:
        path = Path(value)
    elif value.startswith("sqlite:///") and value != "sqlite:///:memory:" and "?" not in value:
        path = Path(value.removeprefix("sqlite:///"))
    else:
        return value
    if not path.is_file():
        raise DatabaseUrlError(f"{value}: no such database file")
    return f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"


def schema_revision(engine: Engine, version_table: str) -> str | None:
    """The Alembic revision a database is at, read from its own version table (None: none yet)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()


def upgrade_schema(engine: Engine, migrations: str, version_table: str, head: str) -> None:
    """Bring a store's schema to its newest Alembic revision `head` (a no-op when it is there),
    in one write transaction; `migrations` is the store's script directory."""
    from alembic import command
    from alembic.config import Config

    if schema_revision(engine, version_table) == head:
        return
    config = Config()
    config.set_main_option("script_location", migrations)
    with writer(engine) as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
