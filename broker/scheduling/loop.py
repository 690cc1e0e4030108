"""The scheduling loop: event-driven (submission, completion, capacity change) plus periodic.

A pass reads the queue, the GPU ledger, the running work and the carbon outlook, asks the
pure engine (`broker.domain.engine`) for decisions, and hands them to the one path that
applies decisions (`broker.scheduling.apply`). Jobs the engine left waiting are skipped
until capacity changes; a commit that found the world changed makes the next pass re-read
the fleet. The loop also follows the sites' status updates, cancels, and after a restart
reconciles what the sites run with what the database holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from broker.db.repository import Store
from broker.domain.clock import Clock
from broker.domain.engine import Engine
from broker.domain.enums import JobState
from broker.domain.explain import Explanation, explain_job
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, Placement
from broker.domain.latency import LatencyMatrix
from broker.domain.packing import Outlook
from broker.domain.placement import Evaluation
from broker.metrics import Metrics
from broker.scheduling.apply import Applier
from broker.scheduling.conditions import HourlyTable, read_hourly
from broker.scheduling.footprints import Accountant
from broker.scheduling.inventory import driven_sites
from broker.scheduling.reconcile import reconcile_site
from broker.scheduling.settings import SchedulerSettings, engine_settings
from broker.scheduling.waiting import changed_conditions
from carbon.base import CarbonSource
from carbon.power import GpuModelSpec
from connectors.base import Connector, StatusUpdate

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Fleet:
    """What a pass knows about the sites besides the ledger: which are in play, the outlook."""

    sites: list[Site]
    carbon: HourlyTable
    pools: list[GpuPool]
    at: datetime


class SchedulingLoop:
    def __init__(
        self,
        *,
        store: Store,
        connectors: Mapping[str, Connector],
        carbon: CarbonSource,
        latency: LatencyMatrix,
        settings: SchedulerSettings,
        clock: Clock,
        metrics: Metrics,
        power: Mapping[str, GpuModelSpec] | None = None,
        publish: Callable[[bool], None] | None = None,
    ) -> None:
        """`power`: the deployment's GPU power table (`Settings.power_table()`); `publish`
        wakes the schedulers of other processes (`broker.db.wake`) when this one does not
        run the passes itself."""
        self._store = store
        self._connectors = connectors
        self._carbon = carbon
        self._latency = latency
        self._settings = settings
        self._engine = Engine(engine_settings(settings, power=power))
        self._accountant = Accountant(engine=self._engine, carbon=carbon, latency=latency)
        self._clock = clock
        self._metrics = metrics
        self._applier = Applier(
            store=store, connectors=connectors, clock=clock, metrics=metrics, account=self._account
        )
        self._wake = asyncio.Event()
        self._publish = publish
        self._running = False  # this process runs the passes now
        # Jobs found unplaceable since capacity last changed: a pass skips them instead of
        # ranking them again (cleared on a capacity change and on every periodic pass).
        self._stuck: set[str] = set()
        self._cached: tuple[float, _Fleet] | None = None

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def applier(self) -> Applier:
        """The path this loop's decisions take to the sites (shared with the burst claim)."""
        return self._applier

    @property
    def store(self) -> Store:
        return self._store

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def latency(self) -> LatencyMatrix:
        return self._latency

    @property
    def carbon(self) -> CarbonSource:
        return self._carbon

    def wake(self, *, capacity_changed: bool = False, publish: bool = True) -> None:
        """Ask for a pass soon: a job was submitted, or capacity came back. Unless this
        process runs the passes, the wake-up goes to the schedulers that do (not with
        `publish=False`: a wake-up that came from them)."""
        if capacity_changed:
            self._stuck.clear()
        self._wake.set()
        if publish and self._publish is not None and not self._running:
            self._publish(capacity_changed)

    async def run(self) -> None:
        """Run passes until cancelled: on every wake-up, and every `interval_s`."""
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False

    async def _run(self) -> None:
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
        fleet = await self._fleet()
        pools = fleet.pools if ignore_capacity else await self._store.pools()
        now = self._clock.now()
        packing = None
        if not ignore_capacity and self._engine.settings.packing_weight > 0:
            queued = await self._store.queued_jobs(limit=self._settings.batch_size)
            packing = Outlook.of([j.spec for j in queued], pools)
        conds = self._engine.conditions(
            job.spec, sites=fleet.sites, latency=self._latency, carbon=fleet.carbon, now=now
        )
        return self._engine.evaluate(
            job.spec,
            pools=[p for p in pools if p.site in conds],
            conditions=conds,
            ignore_capacity=ignore_capacity,
            # explain rules out pools too slow for the deadline, as a pass does; the
            # submission check does not refuse a job for its deadline
            now=None if ignore_capacity else now,
            packing=packing,
        )

    async def explain(self, job: Job) -> Explanation:
        """What a pass now would decide for a waiting `job`, and why (`domain.explain`):
        the queue, the ledger and the running work read fresh, the sites and carbon as
        the last pass saw them (at most one interval old)."""
        fleet = await self._fleet()
        queue = await self._store.queued_jobs(limit=self._settings.batch_size)
        pools = await self._store.pools()
        return explain_job(
            self._engine,
            job,
            queue=queue,
            pools=[p for p in pools if p.site in self._connectors],
            running=await self._store.running_work(),
            sites=fleet.sites,
            latency=self._latency,
            carbon=fleet.carbon,
            now=self._clock.now(),
        )

    async def known_gpu_models(self) -> set[str]:
        """GPU models the configured fleet offers (possibly one scheduler interval old)."""
        return {p.gpu_model for p in (await self._fleet()).pools}

    async def intensity_now(self, zone: str) -> float | None:
        """The zone's grid intensity this hour, as the scheduler sees it."""
        fleet = await self._fleet()
        return fleet.carbon.current(zone, at=self._clock.now())

    async def _fleet(self, *, fresh: bool = False) -> _Fleet:
        """Sites, carbon outlook and pools, re-read when older than one scheduler interval."""
        now = time.monotonic()
        if fresh or self._cached is None or now - self._cached[0] > self._settings.interval_s:
            sites = await driven_sites(self._store, self._connectors)
            at = self._clock.now()
            carbon = await read_hourly(
                self._carbon,
                (s.grid_zone for s in sites),
                start=at,
                hours=self._settings.deferral_horizon_h,
            )
            self._cached = (
                now,
                _Fleet(sites=sites, carbon=carbon, pools=await self._store.pools(), at=at),
            )
        return self._cached[1]

    async def run_once(self) -> int:
        """One pass over the queue; returns how many jobs were placed."""
        if await self._store.release_deferred():
            self._stuck.clear()
        # Stuck jobs come first in queue order, so the first `batch_size` others are in here.
        limit = self._settings.batch_size + len(self._stuck)
        queued = await self._store.queued_jobs(limit=limit)
        queue = [j for j in queued if j.id not in self._stuck][: self._settings.batch_size]
        if not queue:
            return 0
        fleet = await self._fleet(fresh=True)  # reads the ledger now, for this pass
        running = await self._store.running_work()
        started = time.perf_counter()
        now = self._clock.now()
        decisions = self._engine.plan(
            queue=queue,
            pools=[p for p in fleet.pools if p.site in self._connectors],
            running=running,
            sites=fleet.sites,
            latency=self._latency,
            carbon=fleet.carbon,
            now=now,
            waiting=[j.spec for j in queued],  # stuck ones too: the packing term's outlook
        )
        per_job = (time.perf_counter() - started) / len(queue)
        for _ in queue:
            self._metrics.placement_seconds.observe(per_job)
        applied = await self._applier.apply(decisions, reason="placed")
        self._stuck.update(applied.waiting)
        # why each job still waits, written only where it changed (a moved job is skipped)
        await self._store.set_conditions(changed_conditions(decisions, now=now))
        if applied.stale:  # the world moved: look again next pass
            self._cached = None
        return len(applied.placed)

    async def follow(self, connector: Connector) -> None:
        """Apply a site's status updates to the jobs, until the connector closes or the
        caller cancels, which ends the iteration and so the connector's watch."""
        updates = connector.updates()
        try:
            async for update in updates:
                try:
                    await self.apply(update)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("could not apply %s", update)
        finally:
            if isinstance(updates, AsyncGenerator):
                await updates.aclose()

    async def apply(self, update: StatusUpdate) -> None:
        if update.state is JobState.RUNNING:
            if await self._store.mark_running(
                update.job_id, at=update.at, detail=update.detail, run=update.run
            ):
                self._metrics.transitions.labels(state=JobState.RUNNING.value).inc()
            return
        if update.state is JobState.PREEMPTED:  # the site stopped it: back to the queue
            requeued = await self._store.requeue(
                update.job_id,
                reason=f"{update.reason}: {update.detail}",
                at=update.at,
                run=update.run,
            )
            if requeued is not None:
                self._metrics.transitions.labels(state=JobState.PREEMPTED.value).inc()
                self.wake(capacity_changed=True)
                if requeued.placement is not None:
                    await self._account(requeued.job, requeued.placement, "preempted")
            return
        if update.state.terminal:
            released = await self._store.finish(
                update.job_id,
                state=update.state,
                reason=update.reason,
                detail=update.detail,
                at=update.at,
                run=update.run,
            )
            if released is not None:
                self._metrics.transitions.labels(state=update.state.value).inc()
                self.wake(capacity_changed=True)
                if released.placement is not None:
                    await self._account(released.job, released.placement, update.state.value)

    async def cancel(
        self, job_id: str, *, tenant: str | None, reason: str = "cancelled_by_user"
    ) -> Job:
        """Cancel in the database first (the source of truth), then stop it on its site."""
        released = await self._store.cancel(job_id, tenant=tenant, reason=reason)
        if released.placement is not None:
            await self._applier.stop(released.placement, reason="cancelled")
            self._metrics.transitions.labels(state=JobState.CANCELLED.value).inc()
            self.wake(capacity_changed=True)
            await self._account(released.job, released.placement, "cancelled")
        return released.job

    async def _account(self, job: Job, placement: Placement, outcome: str) -> None:
        """Record the footprint of a run that ended. Accounting never stops the loop from
        following jobs: a failure here is logged and the run goes unrecorded."""
        if placement.started_at is None:
            return
        try:
            fleet = await self._fleet()
            run = await self._accountant.run_footprint(
                job=job,
                placement=placement,
                outcome=outcome,
                sites={s.name: s for s in fleet.sites},
                pools={p.id: p for p in fleet.pools},
            )
            if run is not None:
                await self._store.record_footprint(run)
                if run.service_id is not None:
                    self._metrics.service_run(run)
        except Exception:
            log.exception("could not record the footprint of job %s", job.id)

    async def reconcile(self) -> None:
        """Take over every site at once (one replica alone; see `broker.scheduling.follow`
        for the leased way replicas share the sites)."""
        for name, connector in sorted(self._connectors.items()):
            await reconcile_site(
                site=name,
                connector=connector,
                store=self._store,
                applier=self._applier,
                now=self._clock.now(),
            )
