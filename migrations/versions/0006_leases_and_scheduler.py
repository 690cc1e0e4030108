"""leases and scheduler jobs

`leases`: one row per named lease; the broker replica whose row is live runs the scheduled
work (broker/duties/lease.py). `apscheduler_jobs`: APScheduler 3's SQLAlchemyJobStore
table, created here so that Alembic, not the job store, owns the schema; the columns are
exactly the ones apscheduler/jobstores/sqlalchemy.py declares.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 09:12:05.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("expires_at", broker.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", broker.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", broker.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apscheduler_jobs")),
    )
    with op.batch_alter_table("apscheduler_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_apscheduler_jobs_next_run_time"), ["next_run_time"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("apscheduler_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_apscheduler_jobs_next_run_time"))

    op.drop_table("apscheduler_jobs")
    op.drop_table("leases")
