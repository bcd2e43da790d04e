"""Each closed round of a job: who contributed, who was left out and why, node-level ε so far.

Revision ID: 0002_rounds
Revises: 0001_jobs
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_rounds"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coordinator_job_rounds",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("round", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("contributors", sa.Text(), nullable=False),
        sa.Column("refused", sa.Text(), nullable=False),
        sa.Column("node_level_epsilon", sa.Float()),
        sa.Column("seconds", sa.Float()),
        sa.Column("closed_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("coordinator_job_rounds")
