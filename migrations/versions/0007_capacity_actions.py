"""capacity actions and burst instances

`capacity_actions`: every burst and reclaim of cloud capacity, with its reason, the jobs it
was for, its cost and carbon (broker/burst). `burst_instances`: each instance a burst
started, when its node joined, how long it has been idle and when it was released, so that
reclaiming survives a restart and spend is counted per instance.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "capacity_actions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("provider_site", sa.String(length=64), nullable=False),
        sa.Column("joins_site", sa.String(length=64), nullable=False),
        sa.Column("gpu_model", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("spot", sa.Boolean(), nullable=False),
        sa.Column("instance_ids", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("for_jobs", sa.JSON(), nullable=False),
        sa.Column("tenants", sa.JSON(), nullable=False),
        sa.Column("requested_at", broker.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ready_at", broker.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("released_at", broker.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("usd_per_hour", sa.Float(), nullable=False),
        sa.Column("gco2e_per_hour", sa.Float(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("gco2e", sa.Float(), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capacity_actions")),
    )
    with op.batch_alter_table("capacity_actions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_capacity_actions_requested_at"), ["requested_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_capacity_actions_state"), ["state"], unique=False)

    op.create_table(
        "burst_instances",
        sa.Column("provider_site", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=128), nullable=False),
        sa.Column("action_id", sa.String(length=64), nullable=False),
        sa.Column("gpu_model", sa.String(length=64), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("spot", sa.Boolean(), nullable=False),
        sa.Column("usd_per_hour", sa.Float(), nullable=False),
        sa.Column("gco2e_per_hour", sa.Float(), nullable=True),
        sa.Column("launched_at", broker.db.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("provider_id", sa.String(length=255), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=True),
        sa.Column("joined_at", broker.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("idle_since", broker.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("released_at", broker.db.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=False),
        sa.Column("reclaim_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["capacity_actions.id"],
            name=op.f("fk_burst_instances_action_id_capacity_actions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("provider_site", "instance_id", name=op.f("pk_burst_instances")),
    )
    with op.batch_alter_table("burst_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_burst_instances_action_id"), ["action_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_burst_instances_released_at"), ["released_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("burst_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_burst_instances_released_at"))
        batch_op.drop_index(batch_op.f("ix_burst_instances_action_id"))

    op.drop_table("burst_instances")
    with op.batch_alter_table("capacity_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_capacity_actions_state"))
        batch_op.drop_index(batch_op.f("ix_capacity_actions_requested_at"))

    op.drop_table("capacity_actions")
