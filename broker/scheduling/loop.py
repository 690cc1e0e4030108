"""The scheduling loop: event-driven (submission, completion, capacity change) plus periodic.

One pass reads the queue and the ledger, asks the pure engine (`broker.domain.placement`)
for each job's best pool, and commits each decision atomically through the store; a job or
pool that changed meanwhile (another replica, a cancel) makes the commit a no-op and the
job is looked at again next pass. Dispatch to the site happens after the commit; if it
fails, the job goes back to pending and its allocation is released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from broker.config import SchedulerSettings
from broker.db.repository import Store
from broker.domain.clock import Clock
from broker.domain.enums import Health, JobState
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, Placement
from broker.domain.placement import Candidate, Evaluation, Weights, evaluate
from broker.metrics import Metrics
from broker.scheduling.conditions import ConditionsProvider
from connectors.base import Connector, StatusUpdate
from connectors.errors import AuthFailed, ConnectorError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one pass knows about the sites: which are in play, and their grid intensity."""

    sites: list[Site]
    intensities: dict[str, float | None]


class SchedulingLoop:
    def __init__(
        self,
        *,
        store: Store,
        connectors: Mapping[str, Connector],
        conditions: ConditionsProvider,
        settings: SchedulerSettings,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._connectors = connectors
        self._conditions = conditions
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._wake = asyncio.Event()
        # Jobs found unplaceable since capacity last changed: a pass skips them instead of
        # ranking them again (cleared on a capacity change and on every periodic pass).
        self._stuck: set[str] = set()
        self._cached: tuple[float, _Snapshot, list[GpuPool]] | None = None

    def weights_for(self, job: Job) -> Weights:
        w = self._settings.weights[job.spec.tier]
        return Weights(cost=w.cost, latency=w.latency, carbon=w.carbon)

    def wake(self, *, capacity_changed: bool = False) -> None:
        """Ask for a pass soon: a job was submitted, or capacity came back."""
        if capacity_changed:
            self._stuck.clear()
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not stop scheduling for good
                log.exception("scheduling pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.interval_s)
            except TimeoutError:
                self._stuck.clear()  # another replica may have freed capacity meanwhile
            self._wake.clear()

    async def evaluate(self, job: Job, *, ignore_capacity: bool) -> Evaluation:
        """Rank the fleet for `job` as a pass would now (the explain endpoint's answer).

        With `ignore_capacity` (the submission check) the fleet's shape may be up to one
        scheduler interval old; otherwise the GPU ledger is read fresh.
        """
        snapshot, pools = await self._fleet()
        if not ignore_capacity:
            pools = await self._store.pools()
        return self._rank(job, snapshot, pools, ignore_capacity=ignore_capacity)

    async def known_gpu_models(self) -> set[str]:
        """GPU models the configured fleet offers (possibly one scheduler interval old)."""
        _, pools = await self._fleet()
        return {p.gpu_model for p in pools}

    async def _fleet(self) -> tuple[_Snapshot, list[GpuPool]]:
        """Sites, intensities and pools, re-read when older than one scheduler interval."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self._settings.interval_s:
            snapshot = await self._snapshot()
            self._cached = (now, snapshot, await self._store.pools())
        return self._cached[1], self._cached[2]

    async def _snapshot(self) -> _Snapshot:
        sites = [s for s in await self._store.sites() if s.name in self._connectors]
        intensities = await self._conditions.intensities(sites, at=self._clock.now())
        return _Snapshot(sites=sites, intensities=intensities)

    def _rank(
        self, job: Job, snapshot: _Snapshot, pools: list[GpuPool], *, ignore_capacity: bool
    ) -> Evaluation:
        conds = self._conditions.for_job(job.spec, snapshot.sites, snapshot.intensities)
        return evaluate(
            job.spec,
            pools=[p for p in pools if p.site in conds],
            conditions=conds,
            weights=self.weights_for(job),
            utilisation=self._settings.gpu_utilisation,
            ignore_capacity=ignore_capacity,
        )

    async def run_once(self) -> int:
        """One pass over the queue; returns how many jobs were placed."""
        # Stuck jobs come first in queue order, so the first `batch_size` others are in here.
        limit = self._settings.batch_size + len(self._stuck)
        queue = [j for j in await self._store.queued_jobs(limit=limit) if j.id not in self._stuck]
        if not queue:
            return 0
        snapshot = await self._snapshot()
        pool_list = await self._store.pools()
        self._cached = (time.monotonic(), snapshot, pool_list)
        pools = {p.id: p for p in pool_list}
        placed = 0
        for job in queue[: self._settings.batch_size]:
            started = time.perf_counter()
            ev = self._rank(job, snapshot, list(pools.values()), ignore_capacity=False)
            self._metrics.placement_seconds.observe(time.perf_counter() - started)
            best = ev.best
            if best is None:
                self._stuck.add(job.id)
                continue
            placement = self._placement(job, best)
            if not await self._store.place(job=job, placement=placement, reason="placed"):
                pools = {p.id: p for p in await self._store.pools()}  # someone else moved
                continue
            pool = pools[best.pool_id]
            pools[pool.id] = pool.allocate(best.nodes, job.spec.resources.milli_per_node)
            placed += 1
            self._metrics.transitions.labels(state=JobState.SCHEDULED.value).inc()
            self._metrics.wait_seconds.labels(tier=job.spec.tier.value).observe(
                max(0.0, (placement.created_at - job.created_at).total_seconds())
            )
            await self._dispatch(job, placement)
        return placed

    def _placement(self, job: Job, best: Candidate) -> Placement:
        return Placement(
            job_id=job.id,
            site=best.site,
            pool_id=best.pool_id,
            gpu_milli=best.gpu_milli,
            price_per_gpu_hour=best.price_per_gpu_hour,
            spot=best.spot,
            estimated_cost_usd=best.cost_usd,
            estimated_gco2=best.gco2,
            created_at=self._clock.now(),
            node_indices=best.nodes,
        )

    async def _dispatch(self, job: Job, placement: Placement) -> None:
        connector = self._connectors[placement.site]
        try:
            external_id = await connector.dispatch(job=job, placement=placement)
        except ConnectorError as exc:
            log.warning("dispatch of %s to %s failed: %s", job.id, placement.site, exc)
            if isinstance(exc, AuthFailed):
                await self._store.set_site_health(placement.site, Health.AUTH_FAILED, str(exc))
            await self._store.finish(
                job.id, state=JobState.PENDING, reason="dispatch_failed", detail=str(exc)
            )
            return
        await self._store.set_external_id(job.id, external_id)

    async def follow(self, connector: Connector) -> None:
        """Apply a site's status updates to the jobs, until the connector closes."""
        async for update in connector.updates():
            try:
                await self.apply(update)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not apply %s", update)

    async def apply(self, update: StatusUpdate) -> None:
        if update.state is JobState.RUNNING:
            if await self._store.mark_running(update.job_id, at=update.at, detail=update.detail):
                self._metrics.transitions.labels(state=JobState.RUNNING.value).inc()
            return
        if update.state.terminal:
            released = await self._store.finish(
                update.job_id,
                state=update.state,
                reason=update.reason,
                detail=update.detail,
                at=update.at,
            )
            if released is not None:
                self._metrics.transitions.labels(state=update.state.value).inc()
                self.wake(capacity_changed=True)

    async def cancel(self, job_id: str, *, tenant: str | None) -> Job:
        """Cancel in the database first (the source of truth), then stop it on its site."""
        released = await self._store.cancel(job_id, tenant=tenant, reason="cancelled_by_user")
        if released.placement is not None:
            connector = self._connectors.get(released.placement.site)
            if connector is not None:
                try:
                    await connector.cancel(
                        job_id=job_id,
                        external_id=released.placement.external_id,
                        reason="cancelled",
                    )
                except ConnectorError as exc:
                    log.warning(
                        "site %s did not confirm cancel of %s: %s",
                        released.placement.site,
                        job_id,
                        exc,
                    )
            self._metrics.transitions.labels(state=JobState.CANCELLED.value).inc()
            self.wake(capacity_changed=True)
        return released.job

    async def reconcile(self) -> None:
        """After a restart: resume following every job that holds an allocation."""
        for job, placement in await self._store.active_placements():
            connector = self._connectors.get(placement.site)
            if connector is None:
                log.warning(
                    "job %s is placed on %s, which is no longer configured", job.id, placement.site
                )
                continue
            if job.state is JobState.SCHEDULED and placement.external_id is None:
                await self._dispatch(job, placement)  # crashed between commit and dispatch
            else:
                await connector.adopt(job=job, placement=placement)
