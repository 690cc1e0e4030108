"""The allocation ledger in the database: per node CPU and memory, per GPU milli-GPUs.

Both ways of committing placements (one by one in `broker.db.transitions`, in bulk in
`broker.db.batch`) book and give back through `Ledger`:

1. `lock` reads the ledger rows of the nodes the placements name (on PostgreSQL with
   `SELECT ... FOR UPDATE` in key order, a node's row before its GPUs' rows, as an
   inventory refresh (`broker.db.fleet_store.sync_site`) takes them too, so that two
   replicas, or a replica and a refresh, queue rather than deadlock; on SQLite,
   `BEGIN IMMEDIATE` already makes writers take turns), then the pools' sizes and the
   nodes they offer.
2. `take` checks a placement against that snapshot with the domain's own rule
   (`broker.domain.nodes`: its GPUs have the room, counting what others' pods hold, and
   its CPU and memory fit the node) and applies it; a node its pool no longer offers
   takes nothing new, though its rows stay for what it still holds. `give_back` undoes one.
3. `write` stores the changed rows as compare-and-sets on the values read: where the
   driver counts rows (SQLite), a row that changed since the read raises
   `ConcurrentUpdate`, and the caller's transaction rolls back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Table, Update, bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db.models import Base
from broker.domain.errors import ConcurrentUpdate
from broker.domain.jobs import Placement
from broker.domain.nodes import MILLI_PER_GPU, cpu_milli, memory_mb

POOLS: Table = Base.metadata.tables["gpu_pools"]
NODES: Table = Base.metadata.tables["ledger_nodes"]
GPUS: Table = Base.metadata.tables["ledger_gpus"]

T = TypeVar("T")

IN_CHUNK = 400  # (pool, node) pairs per IN list: two bind parameters each

_NodeKey = tuple[str, str]
_GpuKey = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class _Size:
    cpu_milli: int
    memory_mb: int
    nodes: frozenset[str]  # the names of the nodes the pool offers now


@dataclass(slots=True)
class Ledger:
    """The locked ledger rows of some nodes, as read and as the caller leaves them."""

    nodes_read: dict[_NodeKey, tuple[int, int]]  # (cpu, memory) booked
    gpus_read: dict[_GpuKey, int]  # milli booked
    foreign_nodes: dict[_NodeKey, tuple[int, int]]
    foreign_gpus: dict[_GpuKey, int]
    sizes: dict[str, _Size]  # per pool
    nodes_now: dict[_NodeKey, tuple[int, int]] = field(default_factory=dict)
    gpus_now: dict[_GpuKey, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nodes_now = dict(self.nodes_read)
        self.gpus_now = dict(self.gpus_read)

    def take(self, p: Placement) -> bool:
        """Book the placement on each of its nodes, or nothing if any lacks room."""
        size = self.sizes.get(p.pool_id)
        if size is None or not p.node_names or len(p.node_gpus) != len(p.node_names):
            return False
        per_gpu = p.demand.per_gpu
        nodes: dict[_NodeKey, tuple[int, int]] = {}
        gpus: dict[_GpuKey, int] = {}
        for name, on in zip(p.node_names, p.node_gpus, strict=True):
            key = (p.pool_id, name)
            cur = nodes.get(key, self.nodes_now.get(key))
            if cur is None or name not in size.nodes:
                return False
            fcpu, fmem = self.foreign_nodes[key]
            cpu, mem = cur[0] + p.cpu_milli, cur[1] + p.memory_mb
            if cpu + fcpu > size.cpu_milli or mem + fmem > size.memory_mb:
                return False
            nodes[key] = (cpu, mem)
            if len(set(on)) != len(on):
                return False
            for g in on:
                gkey = (p.pool_id, name, g)
                used = gpus.get(gkey, self.gpus_now.get(gkey))
                if used is None or used + self.foreign_gpus[gkey] + per_gpu > MILLI_PER_GPU:
                    return False
                gpus[gkey] = used + per_gpu
        self.nodes_now.update(nodes)
        self.gpus_now.update(gpus)
        return True

    def give_back(self, p: Placement) -> None:
        """Release the placement's share on its nodes (never below zero; rows of nodes
        the ledger no longer has are skipped)."""
        per_gpu = p.demand.per_gpu
        for name, on in zip(p.node_names, p.node_gpus, strict=False):
            key = (p.pool_id, name)
            cur = self.nodes_now.get(key)
            if cur is not None:
                self.nodes_now[key] = (
                    max(0, cur[0] - p.cpu_milli),
                    max(0, cur[1] - p.memory_mb),
                )
            for g in on:
                gkey = (p.pool_id, name, g)
                used = self.gpus_now.get(gkey)
                if used is not None:
                    self.gpus_now[gkey] = max(0, used - per_gpu)

    async def write(self, conn: AsyncConnection) -> None:
        node_rows = [
            {
                "b_pool": k[0],
                "b_node": k[1],
                "b_cpu": self.nodes_read[k][0],
                "b_mem": self.nodes_read[k][1],
                "b_new_cpu": v[0],
                "b_new_mem": v[1],
            }
            for k, v in sorted(self.nodes_now.items())
            if v != self.nodes_read[k]
        ]
        gpu_rows = [
            {"b_pool": k[0], "b_node": k[1], "b_gpu": k[2], "b_old": self.gpus_read[k], "b_new": v}
            for k, v in sorted(self.gpus_now.items())
            if v != self.gpus_read[k]
        ]
        await execute_checked(
            conn,
            update(NODES)
            .where(
                NODES.c.pool_id == bindparam("b_pool"),
                NODES.c.node == bindparam("b_node"),
                NODES.c.cpu_milli == bindparam("b_cpu"),
                NODES.c.memory_mb == bindparam("b_mem"),
            )
            .values(cpu_milli=bindparam("b_new_cpu"), memory_mb=bindparam("b_new_mem")),
            node_rows,
            what="ledger nodes",
        )
        await execute_checked(
            conn,
            update(GPUS)
            .where(
                GPUS.c.pool_id == bindparam("b_pool"),
                GPUS.c.node == bindparam("b_node"),
                GPUS.c.gpu == bindparam("b_gpu"),
                GPUS.c.allocated_milli == bindparam("b_old"),
            )
            .values(allocated_milli=bindparam("b_new")),
            gpu_rows,
            what="ledger GPUs",
        )


async def execute_checked(
    conn: AsyncConnection, statement: Update, rows: list[dict[str, Any]], *, what: str
) -> None:
    """Run an UPDATE for each of `rows`; fail the transaction if the driver counts a miss."""
    if not rows:
        return
    res = await conn.execute(statement, rows)
    if conn.dialect.supports_sane_multi_rowcount and res.rowcount != len(rows):
        raise ConcurrentUpdate(f"{what}: {res.rowcount} of {len(rows)} rows still as read")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size` (one IN list each)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def lock(conn: AsyncConnection, placements: Iterable[Placement]) -> Ledger:
    """The ledger rows of every node the placements name, locked until commit."""
    placements = list(placements)
    keys = sorted({(p.pool_id, n) for p in placements for n in p.node_names})
    pool_ids = sorted({p.pool_id for p in placements})
    locks = conn.dialect.name == "postgresql"
    nodes_read: dict[_NodeKey, tuple[int, int]] = {}
    foreign_nodes: dict[_NodeKey, tuple[int, int]] = {}
    gpus_read: dict[_GpuKey, int] = {}
    foreign_gpus: dict[_GpuKey, int] = {}
    for chunk in chunks(keys, IN_CHUNK):
        nq = select(
            NODES.c.pool_id,
            NODES.c.node,
            NODES.c.cpu_milli,
            NODES.c.memory_mb,
            NODES.c.foreign_cpu_milli,
            NODES.c.foreign_memory_mb,
        ).where(tuple_(NODES.c.pool_id, NODES.c.node).in_(chunk))
        gq = select(
            GPUS.c.pool_id, GPUS.c.node, GPUS.c.gpu, GPUS.c.allocated_milli, GPUS.c.foreign_milli
        ).where(tuple_(GPUS.c.pool_id, GPUS.c.node).in_(chunk))
        if locks:  # "C": byte order, the same as `sorted` above for UTF-8
            nq = nq.order_by(NODES.c.pool_id.collate("C"), NODES.c.node.collate("C"))
            nq = nq.with_for_update()
            gq = gq.order_by(GPUS.c.pool_id.collate("C"), GPUS.c.node.collate("C"), GPUS.c.gpu)
            gq = gq.with_for_update()
        for pid, node, cpu, mem, fcpu, fmem in await conn.execute(nq):
            nodes_read[(pid, node)] = (cpu, mem)
            foreign_nodes[(pid, node)] = (fcpu, fmem)
        for pid, node, gpu, milli, fmilli in await conn.execute(gq):
            gpus_read[(pid, node, gpu)] = milli
            foreign_gpus[(pid, node, gpu)] = fmilli
    # Read after the locks: an inventory refresh that drops a node holds them until it
    # commits, so a booking either sees the node gone or lands before it leaves.
    sizes: dict[str, _Size] = {}
    if pool_ids:
        q = select(
            POOLS.c.id, POOLS.c.cpu_per_node, POOLS.c.memory_gb_per_node, POOLS.c.node_names
        ).where(POOLS.c.id.in_(pool_ids))
        for pid, cpu, mem, names in await conn.execute(q):
            sizes[pid] = _Size(cpu_milli(cpu), memory_mb(mem), frozenset(names or ()))
    return Ledger(
        nodes_read=nodes_read,
        gpus_read=gpus_read,
        foreign_nodes=foreign_nodes,
        foreign_gpus=foreign_gpus,
        sizes=sizes,
    )
