"""job conditions

`jobs.condition_*`: a job's current condition (`broker.domain.conditions`): why it waits,
is deferred or was preempted, with a CamelCase reason, a message and since when; all
null for a job that has none (every job before this revision).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = broker.db.models.UtcDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("condition_type", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("condition_reason", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("condition_message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("condition_since", _UTC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("condition_since")
        batch.drop_column("condition_message")
        batch.drop_column("condition_reason")
        batch.drop_column("condition_type")
