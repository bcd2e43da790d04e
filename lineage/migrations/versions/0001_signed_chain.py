"""The signed, hash-chained lineage store: events, their field index, chain heads, signers.

Revision ID: 0001_signed_chain
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_signed_chain"
down_revision = None
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


def upgrade() -> None:
    op.create_table(
        "lineage_chain_events",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("round", sa.Integer()),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(256)),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("row_count", sa.Integer()),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("policy_hash", sa.String(64)),
        sa.Column("digest", sa.String(64)),
        sa.Column("model_version", sa.String(128)),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("event_hash", sa.String(64), nullable=False),
        sa.Column("signer", sa.String(32), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        # (actor, seq) is each event's identity: the chain's order, and what the field index points at.
        sa.UniqueConstraint("actor", "seq", name="uq_lineage_chain_actor_seq"),
    )
    # One index per compliance question. Keys that grow with time or sequence, so that an
    # append touches few pages (random keys such as hashes are deliberately not indexed).
    for name, columns in {
        "ix_lineage_chain_actor_job_kind": ["actor", "job_id", "kind"],   # what left node N in job J
        "ix_lineage_chain_job_kind": ["job_id", "kind"],                  # by job
        "ix_lineage_chain_actor_time": ["actor", "recorded_at"],          # by node, over time
        "ix_lineage_chain_time": ["recorded_at"],                         # by time range
        "ix_lineage_chain_dataset": ["dataset", "actor", "recorded_at"],  # by dataset
        "ix_lineage_chain_purpose_time": ["purpose", "recorded_at"],      # by purpose
        "ix_lineage_chain_kind_time": ["kind", "recorded_at"],            # releases, aggregations
        "ix_lineage_chain_model_version": ["model_version"],              # what made model version V
    }.items():
        op.create_index(name, "lineage_chain_events", columns)
    op.create_table(
        "lineage_chain_fields",
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("actor", "seq", "field", name="pk_lineage_chain_fields"),
    )
    op.create_index("ix_lineage_chain_field_actor", "lineage_chain_fields", ["field", "actor", "kind", "job_id"])
    op.create_table(
        "lineage_chain_heads",
        sa.Column("actor", sa.String(128), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event_hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "lineage_chain_signers",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for table in ("lineage_chain_signers", "lineage_chain_heads", "lineage_chain_fields", "lineage_chain_events"):
        op.drop_table(table)
