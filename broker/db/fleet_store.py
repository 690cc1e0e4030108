"""The fleet side of the store: sites, pools and what holds GPUs on them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update

from broker.db.codec import (
    pool_from_row,
    site_from_row,
)
from broker.db.models import JobRow, PlacementRow, PoolNodeRow, PoolRow, SiteRow
from broker.db.store_base import StoreBase
from broker.domain.enums import Health, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.work import RunningWork


class FleetStore(StoreBase):
    async def sync_site(self, site: Site, pools: Sequence[GpuPool]) -> None:
        """Upsert a site and its pools' capacity; the allocation ledger is left as it is."""
        now = self._clock.now()
        async with self._sessions.begin() as s:
            row = await s.get(SiteRow, site.name)
            if row is None:
                row = SiteRow(name=site.name)
                s.add(row)
            row.kind, row.region, row.location = site.kind.value, site.region, site.location
            row.grid_zone, row.private, row.pue = site.grid_zone, site.private, site.pue
            row.health, row.health_reason, row.updated_at = (
                site.health.value,
                site.health_reason,
                now,
            )
            for pool in pools:
                prow = await s.get(PoolRow, pool.id)
                if prow is None:
                    prow = PoolRow(id=pool.id, site=site.name)
                    s.add(prow)
                prow.gpu_model, prow.gpu_memory_gb = pool.gpu_model, pool.gpu_memory_gb
                prow.gpus_per_node, prow.nodes = pool.gpus_per_node, pool.nodes
                prow.mig_profiles = list(pool.mig_profiles)
                prow.price_on_demand, prow.price_spot = pool.price_on_demand, pool.price_spot
                prow.cpu_per_node = pool.cpu_per_node
                prow.memory_gb_per_node = pool.memory_gb_per_node
                prow.updated_at = now
                await s.flush()
                have = set(
                    await s.scalars(select(PoolNodeRow.idx).where(PoolNodeRow.pool_id == pool.id))
                )
                s.add_all(
                    PoolNodeRow(pool_id=pool.id, idx=i, allocated_milli=0)
                    for i in range(pool.nodes)
                    if i not in have
                )
            # A pool the site no longer reports (its nodes left or were reclaimed) keeps its
            # row, which placements refer to, but offers no nodes.
            await s.execute(
                update(PoolRow)
                .where(PoolRow.site == site.name, PoolRow.id.not_in([p.id for p in pools]))
                .values(nodes=0, updated_at=now)
            )

    async def ensure_site(self, site: Site) -> None:
        """Record a configured site if the store has never seen it (so a site that fails
        from its first start still shows, with its health); a known site is left as is."""
        async with self._sessions.begin() as s:
            if await s.get(SiteRow, site.name) is None:
                s.add(
                    SiteRow(
                        name=site.name,
                        kind=site.kind.value,
                        region=site.region,
                        location=site.location,
                        grid_zone=site.grid_zone,
                        private=site.private,
                        pue=site.pue,
                        health=site.health.value,
                        health_reason=site.health_reason,
                        updated_at=self._clock.now(),
                    )
                )

    async def set_site_health(self, name: str, health: Health, reason: str = "") -> None:
        async with self._sessions.begin() as s:
            await s.execute(
                update(SiteRow)
                .where(SiteRow.name == name)
                .values(health=health.value, health_reason=reason, updated_at=self._clock.now())
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
            used: dict[str, dict[int, int]] = {}
            for pool_id, idx, milli in await s.execute(
                select(PoolNodeRow.pool_id, PoolNodeRow.idx, PoolNodeRow.allocated_milli)
            ):
                used.setdefault(pool_id, {})[idx] = milli
        return [pool_from_row(r, used.get(r.id, {})) for r in rows]

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
                PlacementRow.node_indices,
                PlacementRow.gpu_milli,
                PoolRow.gpu_model,
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
        out = []
        for (
            job_id,
            tenant,
            tier,
            preemptible,
            pool_id,
            nodes,
            milli,
            model,
            started,
            placed,
            lent,
        ) in rows:
            node_indices = tuple(nodes or ())
            out.append(
                RunningWork(
                    job_id=job_id,
                    tenant=tenant,
                    tier=tiers[tier],
                    preemptible=preemptible,
                    pool_id=pool_id,
                    node_indices=node_indices,
                    milli_per_node=milli // max(1, len(node_indices)),
                    gpu_model=model,
                    started_at=started,
                    placed_at=placed,
                    borrowed=lent,
                )
            )
        return out
