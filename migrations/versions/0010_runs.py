"""runs: each placement's run id; the simulator's runs shared by every replica

`placements.run`: the run a placement started, named by every status update so one from an
earlier run of the same job is never applied to a later placement (NULL on placements made
before this revision: updates for them are applied as before). `sim_runs`: the demo
fleet's runs, so whichever replica follows a simulated site simulates every run on it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("placements") as batch:
        batch.add_column(sa.Column("run", sa.String(length=64), nullable=True))
    op.create_table(
        "sim_runs",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=255), nullable=False),
        sa.Column("run", sa.String(length=64), nullable=False),
        sa.Column("dispatched_at", broker.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("start_delay_s", sa.Float(), nullable=False),
        sa.Column("run_s", sa.Float(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("site", "job_id", name=op.f("pk_sim_runs")),
    )


def downgrade() -> None:
    op.drop_table("sim_runs")
    with op.batch_alter_table("placements") as batch:
        batch.drop_column("run")
