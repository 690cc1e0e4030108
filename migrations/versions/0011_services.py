"""services

`services`: inference services (spec, state, generation, the autoscaler's last decision);
`service_decisions`: the autoscaler's recent decisions with their reasons; `service_load`:
each service's observed load over time; `service_signals`: external triggers that raise a
service's floor for a period; `site_startups`: how long a replica takes to serve at each
site; `jobs.service_id` and `footprints.service_id`: the service a
job (a run) is a replica of.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 22:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.db.models

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = broker.db.models.UtcDateTime(timezone=True)
_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("desired", sa.Integer(), nullable=False),
        sa.Column("load", sa.Float(), nullable=True),
        sa.Column("load_at", _UTC, nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_services_tenant_idempotency_key"),
    )
    op.create_index(op.f("ix_services_tenant"), "services", ["tenant"])
    op.create_table(
        "service_decisions",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("at", _UTC, nullable=False),
        sa.Column("desired", sa.Integer(), nullable=False),
        sa.Column("ready", sa.Integer(), nullable=False),
        sa.Column("load", sa.Float(), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_service_decisions_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_decisions")),
    )
    op.create_index(op.f("ix_service_decisions_service_id"), "service_decisions", ["service_id"])
    op.create_table(
        "service_load",
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("at", _UTC, nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_service_load_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("service_id", "at", name=op.f("pk_service_load")),
    )
    op.create_table(
        "service_signals",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("start", _UTC, nullable=False),
        sa.Column("until", _UTC, nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["services.id"],
            name=op.f("fk_service_signals_service_id_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_signals")),
    )
    op.create_index(op.f("ix_service_signals_service_id"), "service_signals", ["service_id"])
    op.create_table(
        "site_startups",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("site", name=op.f("pk_site_startups")),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("service_id", sa.String(length=40), nullable=True))
        batch.create_index(batch.f("ix_jobs_service_id"), ["service_id"])
    with op.batch_alter_table("footprints") as batch:
        batch.add_column(sa.Column("service_id", sa.String(length=40), nullable=True))
        batch.create_index(batch.f("ix_footprints_service_id"), ["service_id"])


def downgrade() -> None:
    with op.batch_alter_table("footprints") as batch:
        batch.drop_index(batch.f("ix_footprints_service_id"))
        batch.drop_column("service_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_service_id"))
        batch.drop_column("service_id")
    op.drop_table("site_startups")
    op.drop_table("service_signals")
    op.drop_table("service_load")
    op.drop_table("service_decisions")
    op.drop_table("services")
