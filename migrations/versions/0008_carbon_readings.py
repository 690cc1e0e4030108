"""carbon readings

`carbon_readings`: observed hourly grid intensity per zone, the history the broker's own
carbon forecaster learns from where no provider forecasts (carbon/recorded.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 06:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "carbon_readings",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("hour", broker.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("gco2_per_kwh", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("zone", "hour", name=op.f("pk_carbon_readings")),
    )


def downgrade() -> None:
    op.drop_table("carbon_readings")
