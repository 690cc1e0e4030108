"""The fleet side of the store: sites, pools and what holds GPUs on them.

An inventory refresh (`sync_site`) records what others' pods hold on each node beside the
broker's own bookings in the ledger (`broker.db.ledger`), and never touches the bookings.
Two things make that safe while replicas place work:

* It locks the site's ledger rows before it writes them, in the order `ledger.lock` does
  (node rows, then GPU rows, each by key), so a refresh and a placement queue rather than
  deadlock on PostgreSQL, and a placement reads which nodes a pool offers only after the
  refresh that changes them has committed.
* The connector numbers others' GPUs as if the node held nothing else (it cannot see
  which GPUs the broker's pods got), so a booking and others' use could both claim GPU 0
  while GPU 3 looked free. The GPU numbers are ledger slots, not devices, so the refresh
  moves each GPU's worth of others' use onto the slots the bookings leave free (`_beside`).

A site's health reason is usually a provider's error text, so it is stored redacted and
capped (`_reason`): a provider that repeats a credential must not put it in the database,
where every replica and every reader of `GET /v1/sites` would find it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db.codec import (
    node_pool_to_json,
    pool_from_row,
    site_from_row,
)
from broker.db.ledger import GPUS, NODES
from broker.db.models import GpuRow, JobRow, NodeRow, PlacementRow, PoolRow, SiteRow
from broker.db.store_base import StoreBase
from broker.db.upsert import insert_missing
from broker.domain.enums import Health, Tier
from broker.domain.fleet import MILLI_PER_GPU, GpuPool, NodeUse, Site
from broker.domain.work import RunningWork
from redaction import cap, redact


class FleetStore(StoreBase):
    async def sync_site(self, site: Site, pools: Sequence[GpuPool]) -> None:
        """Upsert a site and its pools' capacity, and what others' pods hold on each node;
        the broker's own bookings are left as they are."""
        now = self._clock.now()
        async with self._sessions.begin() as s:
            conn = await s.connection()
            await insert_missing(conn, SITES, [_site_columns(site, now)])
            await insert_missing(
                conn, POOLS, [_pool_columns(site.name, pool, now) for pool in pools]
            )
            row = await s.get(SiteRow, site.name)
            assert row is not None
            row.kind, row.region, row.location = site.kind.value, site.region, site.location
            row.grid_zone, row.private, row.pue = site.grid_zone, site.private, site.pue
            row.health, row.health_reason, row.updated_at = (
                site.health.value,
                _reason(site.health_reason),
                now,
            )
            for pool in pools:
                prow = await s.get(PoolRow, pool.id)
                assert prow is not None
                prow.gpu_model, prow.gpu_memory_gb = pool.gpu_model, pool.gpu_memory_gb
                prow.gpus_per_node, prow.nodes = pool.gpus_per_node, pool.nodes
                prow.mig_profiles = list(pool.mig_profiles)
                prow.price_on_demand, prow.price_spot = pool.price_on_demand, pool.price_spot
                prow.cpu_per_node = pool.cpu_per_node
                prow.memory_gb_per_node = pool.memory_gb_per_node
                prow.node_names = list(pool.names())
                prow.node_pool = node_pool_to_json(pool.node_pool)
                prow.updated_at = now
            # A pool the site no longer reports (its nodes left or were reclaimed) keeps its
            # row, which placements refer to, but offers no nodes.
            await s.execute(
                update(PoolRow)
                .where(PoolRow.site == site.name, PoolRow.id.not_in([p.id for p in pools]))
                .values(nodes=0, node_names=[], updated_at=now)
            )
            await s.flush()
            await _sync_ledger(s, site.name, pools)

    async def ensure_site(self, site: Site) -> None:
        """Record a configured site if the store has never seen it (so a site that fails
        from its first start still shows, with its health); a known site is left as is."""
        async with self._sessions.begin() as s:
            conn = await s.connection()
            await insert_missing(conn, SITES, [_site_columns(site, self._clock.now())])

    async def set_site_health(self, name: str, health: Health, reason: str = "") -> None:
        async with self._sessions.begin() as s:
            await s.execute(
                update(SiteRow)
                .where(SiteRow.name == name)
                .values(
                    health=health.value, health_reason=_reason(reason), updated_at=self._clock.now()
                )
            )

    async def sites(self) -> list[Site]:
        async with self._sessions() as s:
            rows = await s.scalars(select(SiteRow).order_by(SiteRow.name))
            return [site_from_row(r) for r in rows]

    async def pools(self) -> list[GpuPool]:
        async with self._sessions() as s:
            # plain rows, not ORM objects: every pass reads the whole fleet
            rows = list(
                await s.execute(
                    select(*PoolRow.__table__.columns).order_by(PoolRow.site, PoolRow.id)
                )
            )
            gpus: dict[tuple[str, str], dict[int, int]] = {}
            for pool_id, node, gpu, milli, foreign in await s.execute(
                select(
                    GpuRow.pool_id,
                    GpuRow.node,
                    GpuRow.gpu,
                    GpuRow.allocated_milli,
                    GpuRow.foreign_milli,
                )
            ):
                gpus.setdefault((pool_id, node), {})[gpu] = milli + foreign
            use: dict[str, dict[str, NodeUse]] = {}
            for pool_id, node, cpu, mem, fcpu, fmem in await s.execute(
                select(
                    NodeRow.pool_id,
                    NodeRow.node,
                    NodeRow.cpu_milli,
                    NodeRow.memory_mb,
                    NodeRow.foreign_cpu_milli,
                    NodeRow.foreign_memory_mb,
                )
            ):
                per = gpus.get((pool_id, node), {})
                use.setdefault(pool_id, {})[node] = NodeUse(
                    tuple(per[g] for g in sorted(per)), cpu + fcpu, mem + fmem
                )
        return [pool_from_row(r, use.get(r.id, {})) for r in rows]

    async def running_work(self) -> list[RunningWork]:
        """Every job holding GPUs, as the engine sees it.

        Read column by column (no ORM objects, no job spec): every pass reads all of it.
        """
        q = (
            select(
                JobRow.id,
                JobRow.tenant,
                JobRow.tier,
                JobRow.preemptible,
                PlacementRow.pool_id,
                PlacementRow.node_names,
                PlacementRow.node_gpus,
                PlacementRow.cpu_milli,
                PlacementRow.memory_mb,
                PlacementRow.gpu_milli,
                PoolRow.gpu_model,
                PoolRow.node_names,
                PlacementRow.started_at,
                PlacementRow.created_at,
                PlacementRow.borrowed,
            )
            .join(PlacementRow, PlacementRow.job_id == JobRow.id)
            .join(PoolRow, PoolRow.id == PlacementRow.pool_id)
            .where(PlacementRow.active.is_(True))
        )
        async with self._sessions() as s:
            rows = (await s.execute(q)).all()
        tiers = {t.value: t for t in Tier}
        positions: dict[str, dict[str, int]] = {}
        out = []
        for (
            job_id,
            tenant,
            tier,
            preemptible,
            pool_id,
            nodes,
            gpus,
            cpu,
            mem,
            milli,
            model,
            members,
            started,
            placed,
            lent,
        ) in rows:
            at = positions.get(pool_id)
            if at is None:
                at = positions[pool_id] = {n: i for i, n in enumerate(members or ())}
            # a node the pool no longer offers is -1: the engine frees nothing there
            node_indices = tuple(at.get(n, -1) for n in nodes or ())
            out.append(
                RunningWork(
                    job_id=job_id,
                    tenant=tenant,
                    tier=tiers[tier],
                    preemptible=preemptible,
                    pool_id=pool_id,
                    node_indices=node_indices,
                    node_gpus=tuple(tuple(g) for g in gpus or ()),
                    cpu_milli=cpu,
                    memory_mb=mem,
                    milli_per_node=milli // max(1, len(node_indices)),
                    gpu_model=model,
                    started_at=started,
                    placed_at=placed,
                    borrowed=lent,
                )
            )
        return out


async def _sync_ledger(s: AsyncSession, site: str, pools: Sequence[GpuPool]) -> None:
    """Give every node of the pools its ledger rows, and record what others' pods hold
    there (the connector's `node_use`, laid beside the bookings); the broker's own bookings
    are left as they are. The rows of all the site's pools are locked first (see the
    module docstring)."""
    conn = await s.connection()
    pool_ids = sorted(await s.scalars(select(PoolRow.id).where(PoolRow.site == site)))
    nq = select(NODES.c.pool_id, NODES.c.node, NODES.c.foreign_cpu_milli, NODES.c.foreign_memory_mb)
    nq = nq.where(NODES.c.pool_id.in_(pool_ids))
    gq = select(
        GPUS.c.pool_id, GPUS.c.node, GPUS.c.gpu, GPUS.c.allocated_milli, GPUS.c.foreign_milli
    )
    gq = gq.where(GPUS.c.pool_id.in_(pool_ids))
    if conn.dialect.name == "postgresql":  # the order of `broker.db.ledger.lock`
        nq = nq.order_by(NODES.c.pool_id.collate("C"), NODES.c.node.collate("C"))
        gq = gq.order_by(GPUS.c.pool_id.collate("C"), GPUS.c.node.collate("C"), GPUS.c.gpu)
        nq, gq = nq.with_for_update(), gq.with_for_update()
    nodes = {(pid, n): (cpu, mem) for pid, n, cpu, mem in await conn.execute(nq)}
    gpus = {(pid, n, g): (milli, foreign) for pid, n, g, milli, foreign in await conn.execute(gq)}

    new_nodes: list[dict[str, Any]] = []
    new_gpus: list[dict[str, Any]] = []
    changed_nodes: list[dict[str, Any]] = []
    changed_gpus: list[dict[str, Any]] = []
    for pool in pools:
        count = pool.gpus_per_node
        for name, use in zip(pool.names(), pool.uses(), strict=True):
            held = (use.cpu_milli, use.memory_mb)
            row = nodes.get((pool.id, name))
            if row is None:
                new_nodes.append(
                    {
                        "pool_id": pool.id,
                        "node": name,
                        "cpu_milli": 0,
                        "memory_mb": 0,
                        "foreign_cpu_milli": held[0],
                        "foreign_memory_mb": held[1],
                    }
                )
            elif row != held:
                changed_nodes.append(
                    {"b_pool": pool.id, "b_node": name, "b_cpu": held[0], "b_mem": held[1]}
                )
            booked = [gpus.get((pool.id, name, g), (0, 0))[0] for g in range(count)]
            foreign = _beside(booked, use.gpus[:count])
            for g in range(count):
                grow = gpus.get((pool.id, name, g))
                if grow is None:
                    new_gpus.append(
                        {
                            "pool_id": pool.id,
                            "node": name,
                            "gpu": g,
                            "allocated_milli": 0,
                            "foreign_milli": foreign[g],
                        }
                    )
                elif grow[1] != foreign[g]:
                    changed_gpus.append(
                        {"b_pool": pool.id, "b_node": name, "b_gpu": g, "b_foreign": foreign[g]}
                    )
    # another replica's refresh may have added the same new rows meanwhile
    await insert_missing(conn, NODES, new_nodes)
    await insert_missing(conn, GPUS, new_gpus)
    if changed_nodes:
        await conn.execute(
            update(NODES)
            .where(NODES.c.pool_id == bindparam("b_pool"), NODES.c.node == bindparam("b_node"))
            .values(foreign_cpu_milli=bindparam("b_cpu"), foreign_memory_mb=bindparam("b_mem")),
            changed_nodes,
        )
    if changed_gpus:
        await conn.execute(
            update(GPUS)
            .where(
                GPUS.c.pool_id == bindparam("b_pool"),
                GPUS.c.node == bindparam("b_node"),
                GPUS.c.gpu == bindparam("b_gpu"),
            )
            .values(foreign_milli=bindparam("b_foreign")),
            changed_gpus,
        )


def _beside(booked: Sequence[int], foreign: Sequence[int]) -> list[int]:
    """Others' use of each GPU moved onto the GPUs the bookings leave free.

    Each GPU's worth (largest first) goes where the domain would put a share
    (`broker.domain.nodes.gpus_for`): the GPU with the least room that still holds it, so
    a whole GPU of theirs takes a GPU nobody booked; on an over-committed node, where none
    holds it, the GPU with the most room.
    """
    out = [0] * len(booked)
    for amount in sorted((f for f in foreign if f > 0), reverse=True):
        room = [(MILLI_PER_GPU - booked[g] - out[g], g) for g in range(len(booked))]
        if not room:
            break
        holding = [r for r in room if r[0] >= amount]
        _, g = min(holding) if holding else max(room, key=lambda r: (r[0], -r[1]))
        out[g] += amount
    return out


REASON_CHARS = 300
SITES: Table = SiteRow.__table__  # type: ignore[assignment]
POOLS: Table = PoolRow.__table__  # type: ignore[assignment]


def _site_columns(site: Site, now: datetime) -> dict[str, Any]:
    return {
        "name": site.name,
        "kind": site.kind.value,
        "region": site.region,
        "location": site.location,
        "grid_zone": site.grid_zone,
        "private": site.private,
        "pue": site.pue,
        "health": site.health.value,
        "health_reason": _reason(site.health_reason),
        "updated_at": now,
    }


def _reason(text: str) -> str:
    """A health reason as stored: redacted, then capped (a cut could split a secret)."""
    return cap(redact(text), REASON_CHARS)


def _pool_columns(site: str, pool: GpuPool, now: datetime) -> dict[str, Any]:
    return {
        "id": pool.id,
        "site": site,
        "gpu_model": pool.gpu_model,
        "gpu_memory_gb": pool.gpu_memory_gb,
        "gpus_per_node": pool.gpus_per_node,
        "nodes": pool.nodes,
        "mig_profiles": list(pool.mig_profiles),
        "price_on_demand": pool.price_on_demand,
        "price_spot": pool.price_spot,
        "cpu_per_node": pool.cpu_per_node,
        "memory_gb_per_node": pool.memory_gb_per_node,
        "node_names": list(pool.names()),
        "node_pool": node_pool_to_json(pool.node_pool),
        "updated_at": now,
    }
