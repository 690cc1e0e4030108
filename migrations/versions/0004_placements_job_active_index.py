"""index placements by (job_id, active)

Finding a job's active placement (finish, mark_running, set_external_ids) used the
`active` index on SQLite, which has no statistics to prefer `job_id`: every lookup walked
all active placements.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_placements_job_id_active", "placements", ["job_id", "active"])


def downgrade() -> None:
    op.drop_index("ix_placements_job_id_active", table_name="placements")
