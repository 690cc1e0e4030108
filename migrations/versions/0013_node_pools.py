"""node pools

`gpu_pools.node_pool`: the site-declared node pool a pool's nodes are in, and the tiers
and kinds it takes (`broker.domain.fleet.NodePoolScope`, as JSON); null for a pool in
none (every pool before this revision).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 01:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gpu_pools") as batch:
        batch.add_column(sa.Column("node_pool", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gpu_pools") as batch:
        batch.drop_column("node_pool")
