"""per-GPU ledger with CPU and memory, keyed by node name

`pool_nodes` (one milli-GPU total per node position) becomes `ledger_nodes` (per node
name: CPU and memory booked, and held by others' pods) and `ledger_gpus` (per GPU of each
node: milli-GPUs booked and held by others). Pools list the names of the nodes they offer;
placements name their nodes, the GPUs on each, and their CPU and memory per node.

Existing data: a pool's nodes are named by their old positions ("0", "1", ...), which is
what configured pools are named by anyway; a Kubernetes site's next inventory brings the
real names (finish or drain the work running there before upgrading: the bookings of
running jobs stay on the position-named rows). Active placements are laid out again on
their nodes' GPUs, whole GPUs from the lowest free one, a share on the GPU with the least
room that holds it (the domain's rule), and book the CPU and memory their job asked for
(rounded as the domain rounds them); nothing is refused (a node already over-committed
stays so, and shows in `broker check`-style reports as over). A node past the end of its
pool keeps its name and books nothing; finished placements keep their nodes' names.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 19:30:00.000000
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_nodes",
        sa.Column("pool_id", sa.String(length=160), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("cpu_milli", sa.BigInteger(), nullable=False),
        sa.Column("memory_mb", sa.BigInteger(), nullable=False),
        sa.Column("foreign_cpu_milli", sa.BigInteger(), nullable=False),
        sa.Column("foreign_memory_mb", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["gpu_pools.id"],
            name=op.f("fk_ledger_nodes_pool_id_gpu_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool_id", "node", name=op.f("pk_ledger_nodes")),
    )
    op.create_table(
        "ledger_gpus",
        sa.Column("pool_id", sa.String(length=160), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=False),
        sa.Column("allocated_milli", sa.BigInteger(), nullable=False),
        sa.Column("foreign_milli", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["gpu_pools.id"],
            name=op.f("fk_ledger_gpus_pool_id_gpu_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pool_id", "node", "gpu", name=op.f("pk_ledger_gpus")),
    )
    with op.batch_alter_table("gpu_pools", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("node_names", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("node_names", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column("node_gpus", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column("cpu_milli", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("memory_mb", sa.BigInteger(), nullable=False, server_default="0")
        )
    _backfill(op.get_bind())
    with op.batch_alter_table("gpu_pools", schema=None) as batch_op:
        batch_op.alter_column("node_names", server_default=None)
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.alter_column("node_names", server_default=None)
        batch_op.alter_column("node_gpus", server_default=None)
        batch_op.alter_column("cpu_milli", server_default=None)
        batch_op.alter_column("memory_mb", server_default=None)
        batch_op.drop_column("node_indices")
    op.drop_table("pool_nodes")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _cpu_milli(cores: float) -> int:
    """`broker.domain.nodes.cpu_milli`, frozen here: 4.03 cores is 4030m, not 4031m."""
    return math.ceil(round(cores * 1000, 6))


def _memory_mb(gb: float) -> int:
    """`broker.domain.nodes.memory_mb`, frozen here."""
    return math.ceil(round(gb * 1024, 6))


def _backfill(conn: sa.Connection) -> None:
    pools = conn.execute(sa.text("SELECT id, gpus_per_node, nodes FROM gpu_pools")).all()
    placements = conn.execute(
        sa.text(
            "SELECT p.id, p.pool_id, p.gpu_milli, p.node_indices, p.active, j.spec "
            "FROM placements p JOIN jobs j ON j.id = p.job_id ORDER BY p.id"
        )
    ).all()
    for pool_id, per_node, nodes in pools:
        gpus = [[0] * per_node for _ in range(nodes)]
        cpu = [0] * nodes
        mem = [0] * nodes
        for pid, ppool, milli, indices, active, spec in placements:
            if ppool != pool_id:
                continue
            # every node keeps its name, even one the pool no longer has (its position is
            # past the end): the share per node is the same, and a node without ledger
            # rows books nothing, as one that left the pool does
            idx = list(_json(indices) or [])
            per = milli // max(1, len(idx))
            res = (_json(spec) or {}).get("resources") or {}
            c = _cpu_milli(float(res.get("cpu", 1.0)))
            m = _memory_mb(float(res.get("memory_gb", 4.0)))
            layout: list[list[int]] = []
            # finished placements keep their nodes for the record, and book nothing
            for i in idx if active else ():
                on = _lay_out(gpus[i], per) if 0 <= i < nodes else []
                layout.append(on)
                share = per if per % 1000 else 1000
                for g in on:
                    gpus[i][g] += share
                if 0 <= i < nodes:
                    cpu[i] += c
                    mem[i] += m
            conn.execute(
                sa.text(
                    "UPDATE placements SET node_names = :n, node_gpus = :g, cpu_milli = :c, "
                    "memory_mb = :m WHERE id = :id"
                ),
                {
                    "n": json.dumps([str(i) for i in idx]),
                    "g": json.dumps(layout),
                    "c": c,
                    "m": m,
                    "id": pid,
                },
            )
        conn.execute(
            sa.text("UPDATE gpu_pools SET node_names = :n WHERE id = :id"),
            {"n": json.dumps([str(i) for i in range(nodes)]), "id": pool_id},
        )
        if nodes:
            conn.execute(
                sa.text(
                    "INSERT INTO ledger_nodes (pool_id, node, cpu_milli, memory_mb, "
                    "foreign_cpu_milli, foreign_memory_mb) VALUES (:p, :n, :c, :m, 0, 0)"
                ),
                [{"p": pool_id, "n": str(i), "c": cpu[i], "m": mem[i]} for i in range(nodes)],
            )
        if nodes and per_node:
            conn.execute(
                sa.text(
                    "INSERT INTO ledger_gpus (pool_id, node, gpu, allocated_milli, foreign_milli) "
                    "VALUES (:p, :n, :g, :a, 0)"
                ),
                [
                    {"p": pool_id, "n": str(i), "g": g, "a": gpus[i][g]}
                    for i in range(nodes)
                    for g in range(per_node)
                ],
            )


def _lay_out(gpus: list[int], per_node: int) -> list[int]:
    """The GPUs a per-node share takes (the domain's rule; over-committed when no room)."""
    if per_node % 1000:
        fitting = [g for g, used in enumerate(gpus) if 1000 - used >= per_node]
        if not fitting:
            return [min(range(len(gpus)), key=lambda g: gpus[g])] if gpus else []
        return [min(fitting, key=lambda g: (1000 - gpus[g], g))]
    want = per_node // 1000
    free = [g for g, used in enumerate(gpus) if used == 0]
    busy = sorted((g for g in range(len(gpus)) if gpus[g]), key=lambda g: (gpus[g], g))
    return sorted((free + busy)[:want])


def downgrade() -> None:
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
    conn = op.get_bind()
    # positions from the pools' current node lists; totals per node from the GPU rows
    for pool_id, names in conn.execute(sa.text("SELECT id, node_names FROM gpu_pools")).all():
        names = _json(names) or []
        totals: dict[str, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT node, SUM(allocated_milli) FROM ledger_gpus WHERE pool_id = :p "
                    "GROUP BY node"
                ),
                {"p": pool_id},
            ).all()
        )
        if names:
            conn.execute(
                sa.text(
                    "INSERT INTO pool_nodes (pool_id, idx, allocated_milli) VALUES (:p, :i, :a)"
                ),
                [{"p": pool_id, "i": i, "a": int(totals.get(n) or 0)} for i, n in enumerate(names)],
            )
        pos = {n: i for i, n in enumerate(names)}
        for pid, pnames in conn.execute(
            sa.text("SELECT id, node_names FROM placements WHERE pool_id = :p"), {"p": pool_id}
        ).all():
            # a node the pool no longer lists keeps its position if its name is one
            idx = [
                pos[n] if n in pos else int(n)
                for n in _json(pnames) or []
                if n in pos or n.isdigit()
            ]
            conn.execute(
                sa.text("UPDATE placements SET node_indices = :n WHERE id = :id"),
                {"n": json.dumps(idx), "id": pid},
            )
    with op.batch_alter_table("placements", schema=None) as batch_op:
        batch_op.alter_column("node_indices", server_default=None)
        batch_op.drop_column("memory_mb")
        batch_op.drop_column("cpu_milli")
        batch_op.drop_column("node_gpus")
        batch_op.drop_column("node_names")
    with op.batch_alter_table("gpu_pools", schema=None) as batch_op:
        batch_op.drop_column("node_names")
    op.drop_table("ledger_gpus")
    op.drop_table("ledger_nodes")
