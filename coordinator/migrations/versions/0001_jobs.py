"""The coordinator's resources: nodes, accounts, jobs, their steps and each node's decision.

Revision ID: 0001_jobs
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


def upgrade() -> None:
    op.create_table(
        "coordinator_nodes",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("region", sa.String(64)),
        sa.Column("country", sa.String(2)),
        sa.Column("policy_summary", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.String(32), nullable=False),
        sa.Column("last_seen", sa.String(32)),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "coordinator_accounts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(64)),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "coordinator_jobs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("min_contributors", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("results", sa.Text()),
    )
    op.create_table(
        "coordinator_job_steps",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("coordinator_jobs.job_id"), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
    )
    op.create_table(
        "coordinator_job_nodes",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("coordinator_jobs.job_id"), primary_key=True),
        sa.Column("node_id", sa.String(64), sa.ForeignKey("coordinator_nodes.node_id"), primary_key=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("signature", sa.String(128)),
        sa.Column("decided_at", sa.String(32)),
    )


def downgrade() -> None:
    for table in ("coordinator_job_nodes", "coordinator_job_steps", "coordinator_jobs", "coordinator_accounts",
                  "coordinator_nodes"):
        op.drop_table(table)
