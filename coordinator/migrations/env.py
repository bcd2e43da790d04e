"""Alembic environment for the coordinator's store: run by `coordinator.store.upgrade`, never alone.

The connection comes from the caller; the version table has its own name so that the
coordinator's store can share a database with a lineage store's Alembic history.
"""

from alembic import context

VERSION_TABLE = "coordinator_alembic_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
