"""Alembic environment for the lineage store: run by `lineage.store.upgrade`, never alone.

The connection comes from the caller; the version table has its own name so that a lineage
store can share a database with other applications' Alembic histories.
"""

from alembic import context

VERSION_TABLE = "lineage_alembic_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
