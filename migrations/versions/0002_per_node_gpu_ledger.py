"""per-node GPU ledger

The pool-level counters (allocated_milli, total_milli) become one ledger row per node, and
each placement records which nodes it holds, so gang and whole-node jobs are checked
against real per-node room. Existing active placements are spread over nodes first-fit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:36:19.121010
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pool_nodes",
        sa.Column("pool_id", sa.String(length=160), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("allocated_milli", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["gpu_pools.id"],
            name=op.f("fk_pool_nodes_pool_id_gpu_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool_id", "idx", name=op.f("pk_pool_nodes")),
    )
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("node_indices", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    _backfill(op.get_bind())
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.alter_column("node_indices", server_default=None)
    with op.batch_alter_table("gpu_pools", schema=None) as batch_op:
        batch_op.drop_column("total_milli")
        batch_op.drop_column("allocated_milli")


def _backfill(conn: sa.Connection) -> None:
    pools = conn.execute(sa.text("SELECT id, gpus_per_node, nodes FROM gpu_pools")).all()
    active = conn.execute(
        sa.text("SELECT id, pool_id, gpu_milli FROM placements WHERE active ORDER BY id")
    ).all()
    for pool_id, per_node, nodes in pools:
        used = [0] * nodes
        cap = per_node * 1000
        for pid, ppool, milli in active:
            if ppool != pool_id:
                continue
            chosen: list[int] = []
            remaining = milli
            for i in range(nodes):  # first fit, whole share per node where it fits
                if remaining <= 0:
                    break
                take = min(remaining, cap - used[i])
                if take > 0:
                    used[i] += take
                    remaining -= take
                    chosen.append(i)
            conn.execute(
                sa.text("UPDATE placements SET node_indices = :n WHERE id = :id"),
                {"n": json.dumps(chosen), "id": pid},
            )
        if nodes:
            conn.execute(
                sa.text(
                    "INSERT INTO pool_nodes (pool_id, idx, allocated_milli) VALUES (:p, :i, :a)"
                ),
                [{"p": pool_id, "i": i, "a": used[i]} for i in range(nodes)],
            )


def downgrade() -> None:
    with op.batch_alter_table("gpu_pools", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("allocated_milli", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("total_milli", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE gpu_pools SET total_milli = gpus_per_node * nodes * 1000, allocated_milli = "
        "(SELECT COALESCE(SUM(allocated_milli), 0) FROM pool_nodes "
        "WHERE pool_nodes.pool_id = gpu_pools.id)"
    )
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.drop_column("node_indices")
    op.drop_table("pool_nodes")
