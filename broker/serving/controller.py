"""The service controller: each tick, every service's load → the autoscaler → replicas.

For each live service it reads the load (`broker.serving.load`), keeps it as history,
asks the pure autoscaler (`broker.domain.autoscale`) for the replicas wanted, records the
decision with its reason, and converges the replicas, which are jobs:

- **more wanted**: new replica jobs, each pinned to a site chosen by `broker.domain.spread`
  among the sites the engine would place one on now (cleaner grid first, and no site holding
  more than the spread rule allows); the scheduling loop places them as it places any job,
  preempting lower tiers for a P1 service. With no site free now, the replica waits unpinned
  and the engine places it where room appears.
- **fewer wanted**: replicas stopped, not-ready first, then from the dirtiest site.
- **a new generation** (the image or resources changed): replicas of the old one are
  stopped only as replicas of the new one become ready, so ready capacity never drops
  (a surge of up to `desired` new replicas, Kubernetes' `maxUnavailable: 0`).
- **draining** (deleted): every replica stopped, then the service is gone.

The scaler's state between ticks (panic, the scale-down delay's recent recommendations,
the idle clock) lives in this replica's memory: a replica that takes the controller over
starts each service afresh, which delays a scale-down by at most the delay, never loses a
scale-up. Start-up times are measured per site from each replica's placement to its first
RUNNING, and remembered (a moving average), for the predictive part and cold starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.db.repository import Store
from broker.db.service_store import Decision
from broker.demand.service_load import LoadForecaster, LoadMethod, floor_minute
from broker.domain.autoscale import Floor, ForecastPoint, LoadSample, ScalerState, ScalingPolicy
from broker.domain.autoscale import decide as autoscale
from broker.domain.clock import Clock
from broker.domain.enums import JobState
from broker.domain.errors import JobAlreadyFinished, JobNotFound
from broker.domain.jobs import Job, Placement, draft
from broker.domain.placement import Candidate
from broker.domain.services import Service, ServiceSpec, ServiceState, replica_spec
from broker.domain.spread import ReplicaView, SiteOption, choose_additions, choose_removals
from broker.metrics import Metrics
from broker.scheduling.loop import SchedulingLoop
from broker.serving.load import LoadSource
from broker.serving.settings import ServingSettings

log = logging.getLogger(__name__)

DEFAULT_STARTUP_S = 60.0  # a replica's start-up at a site never measured yet
MAX_REASON = 2000  # characters of a decision's reason kept
FORECAST_MARGIN_S = 120.0  # read the forecast this far past a replica's start-up
_STARTUP_WEIGHT = 0.3  # of the newest measurement in the moving average


def policy_of(spec: ServiceSpec) -> ScalingPolicy:
    return ScalingPolicy(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        metric=spec.metric,
        target_per_replica=spec.target,
        stable_window_s=spec.stable_window_s,
        panic_window_s=spec.stable_window_s / 10,
        scale_down_delay_s=spec.scale_down_delay_s,
        scale_to_zero_after_s=spec.scale_to_zero_after_s,
    )


@dataclass(slots=True)
class _Cold:
    """A service woken from zero, until its first ready replica."""

    since: datetime


class ServiceController:
    def __init__(
        self,
        *,
        store: Store,
        loop: SchedulingLoop,
        clock: Clock,
        metrics: Metrics,
        load: LoadSource,
        settings: ServingSettings,
    ) -> None:
        self._store = store
        self._loop = loop
        self._clock = clock
        self._metrics = metrics
        self._load = load
        self._settings = settings
        self._wake = asyncio.Event()
        self._states: dict[str, ScalerState] = {}
        self._startup_s: dict[str, float] = {}  # by site
        self._seen_running: set[str] = set()  # replicas whose start-up was measured
        self._startup_loaded = False
        self._decided: set[str] = set()  # services known to have a recorded decision
        self._cold: dict[str, _Cold] = {}
        self._recent: dict[str, deque[LoadSample]] = {}
        self._minute: dict[str, tuple[datetime, float, int]] = {}  # start, sum, samples
        self._forecasters: dict[str, tuple[datetime, LoadForecaster]] = {}

    def wake(self) -> None:
        """A service was created, changed or deleted: act soon."""
        self._wake.set()

    def startup_s(self, site: str | None = None) -> float:
        """What a new replica takes to serve: at `site`, or the slowest measured site."""
        if site is not None and site in self._startup_s:
            return self._startup_s[site]
        return max(self._startup_s.values(), default=DEFAULT_STARTUP_S)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad tick must not stop the services for good
                log.exception("service controller tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.interval_s)
            self._wake.clear()

    async def tick(self) -> None:
        if not self._startup_loaded:  # what earlier leaseholders measured
            self._startup_s.update(await self._store.startup_times())
            self._startup_loaded = True
        seen: set[str] = set()
        for svc in await self._store.live_services():
            try:
                seen |= await self._reconcile(svc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("service %s: reconciling failed", svc.id)
        self._seen_running &= seen  # forget replicas that ended

    async def _reconcile(self, svc: Service) -> set[str]:
        """One service's tick; returns the ids of its replicas that have not ended."""
        now = self._clock.now()
        replicas = await self._store.replicas(svc.id)
        await self._measure_startups(replicas)
        if svc.state is ServiceState.DELETING:
            await self._drain(svc, replicas)
            return set()
        current = [(j, p) for j, p in replicas if j.spec.generation == svc.generation]
        ready = sum(1 for j, _ in replicas if j.state is JobState.RUNNING)
        policy = policy_of(svc.spec)
        load = await self._load.observe(svc, now=now)
        samples = await self._observed(svc, load, now=now, keep_s=policy.stable_window_s)
        floors = [
            Floor(start=s.start, until=s.until, replicas=s.replicas, label=s.note or f"#{s.id}")
            for s in await self._store.signals(svc.id, now=now)
        ]
        decision = autoscale(
            policy=policy,
            samples=samples,
            ready=ready,
            current=len(current),
            now=now,
            state=self._states.get(svc.id, ScalerState()),
            startup_s=self.startup_s(),
            floors=floors,
            forecast=await self._forecast(svc, samples, now=now),
        )
        self._states[svc.id] = decision.state
        self._cold_start(svc, decision.desired, ready, now)
        self._metrics.service_replicas.labels(service=svc.id, kind="desired").set(decision.desired)
        self._metrics.service_replicas.labels(service=svc.id, kind="ready").set(ready)
        # The replicas added or stopped, each with where and why (the cleaner site, the
        # dirtiest, the spread, the cost cap), go into the decision's reason.
        done = await self._converge(svc, replicas, want=decision.desired)
        changed = decision.desired != svc.desired
        # a service's first decision is recorded even when it changes nothing; whether it
        # has one is asked of the database once per leaseholder, not every tick
        first = svc.id not in self._decided and not await self._store.decisions(svc.id, limit=1)
        self._decided.add(svc.id)
        if changed or done or first:
            if changed:
                self._metrics.service_scalings.labels(mode=decision.mode.value).inc()
            reason = "; ".join([decision.reason, *done])
            await self._store.record_decision(
                svc.id,
                Decision(
                    at=now,
                    desired=decision.desired,
                    ready=ready,
                    load=load,
                    mode=decision.mode.value,
                    reason=reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…",
                ),
            )
        return {job.id for job, _ in replicas}

    async def _observed(
        self, svc: Service, load: float | None, *, now: datetime, keep_s: float
    ) -> list[LoadSample]:
        """The samples of the last `keep_s` (this replica's memory); each minute's mean goes
        to the database, the history the forecaster and the API read."""
        recent = self._recent.setdefault(svc.id, deque())
        if load is not None:
            recent.append(LoadSample(now, load))
            self._metrics.service_load.labels(service=svc.id).set(load)
            await self._store.set_load(svc.id, at=now, value=load)
        while recent and (now - recent[0].at).total_seconds() > keep_s:
            recent.popleft()
        minute = floor_minute(now)
        start, total, n = self._minute.get(svc.id, (minute, 0.0, 0))
        if start != minute and n:
            await self._store.record_load(svc.id, at=start, value=total / n)
            start, total, n = minute, 0.0, 0
        if load is not None:
            total, n = total + load, n + 1
        self._minute[svc.id] = (minute, total, n)
        return list(recent)

    async def _forecast(
        self, svc: Service, recent: Sequence[LoadSample], *, now: datetime
    ) -> list[ForecastPoint]:
        """The service's load ahead, from its own history (refitted every `refit_s`, in a
        thread: a fit takes a fraction of a second); none while the history is too short
        for the model, where the reactive part alone decides."""
        fitted = self._forecasters.get(svc.id)
        if fitted is None or (now - fitted[0]).total_seconds() >= self._settings.refit_s:
            since = now - timedelta(hours=self._settings.load_retention_h)
            history = [LoadSample(at, v) for at, v in await self._store.load_since(svc.id, since)]
            model = await asyncio.to_thread(LoadForecaster().fit, history, now=now)
            fitted = self._forecasters[svc.id] = (now, model)
        model = fitted[1]
        if model.method is not LoadMethod.GBM_QUANTILE:
            return []
        horizon = self.startup_s() + FORECAST_MARGIN_S
        points: list[ForecastPoint] = model.forecast(now, horizon_s=horizon, recent=recent)
        return points

    async def _converge(
        self, svc: Service, replicas: Sequence[tuple[Job, Placement | None]], *, want: int
    ) -> list[str]:
        """Add or stop replicas towards `want`; returns what was done and why, per replica."""
        done: list[str] = []
        current = [(j, p) for j, p in replicas if j.spec.generation == svc.generation]
        old = [(j, p) for j, p in replicas if j.spec.generation != svc.generation]
        if len(current) < want:
            done += await self._add(svc, current, want - len(current))
        elif len(current) > want:
            done += await self._remove(svc, current, len(current) - want, why="scaled down")
        # Old-generation replicas retire only as new ones serve: never below ready capacity.
        current_ready = sum(1 for j, _ in current if j.state is JobState.RUNNING)
        surplus = current_ready + len(old) - want
        if old and surplus > 0:
            done += await self._remove(
                svc, old, min(surplus, len(old)), why="rolled to a new generation"
            )
        return done

    async def _add(
        self, svc: Service, current: Sequence[tuple[Job, Placement | None]], count: int
    ) -> list[str]:
        existing: dict[str, int] = {}
        for _, p in current:
            if p is not None:
                existing[p.site] = existing.get(p.site, 0) + 1
        options, cheapest = await self._site_options(svc)
        cap = svc.spec.max_hourly_cost
        if cap is not None and cheapest is not None:
            spent = sum(_hourly(p) for _, p in current if p is not None)
            affordable = max(0, math.floor((cap - spent) / cheapest + 1e-9))
            if affordable < count:
                log.debug(
                    "service %s: %d more replicas wanted, %d fit max_hourly_cost %.2f USD",
                    svc.id,
                    count,
                    affordable,
                    cap,
                )
                count = affordable
        if count == 0:
            return []  # the cap binds: desired stays above ready, visible in the service
        chosen = choose_additions(
            count=count,
            candidates=options,
            existing=existing,
            critical_share=svc.spec.critical_share,
        )
        regions = {s.name: s.region for s in await self._store.sites()}
        picks: list[tuple[str | None, str]] = [(site, why) for site, why in chosen]
        picks += [(None, "no site has room now: placed where room appears")] * (count - len(picks))
        done: list[str] = []
        for site, why in picks:
            pinned = None if site is None else (regions[site],)
            job, _ = await self._store.create_job(
                tenant=svc.tenant, spec=replica_spec(svc, regions=pinned)
            )
            log.info("service %s: replica %s added (%s)", svc.id, job.id, why)
            done.append(f"+1 on {site or 'the first site with room'} ({why})")
        self._loop.wake()
        return done

    async def _site_options(self, svc: Service) -> tuple[list[SiteOption], float | None]:
        """Each site the engine would place a replica on now, with its best score; and the
        cheapest hourly cost of a replica anywhere (None when no site has room)."""
        job = draft(replica_spec(svc), tenant=svc.tenant, at=self._clock.now())
        ev = await self._loop.evaluate(job, ignore_capacity=False)
        free = {p.id: p.free_gpus for p in await self._store.pools()}
        per_replica = max(1e-9, svc.spec.resources.gpu_equivalents)
        best: dict[str, Candidate] = {}  # candidates come best first
        slots: dict[str, int] = {}
        for c in ev.candidates:  # how many replicas fit (by GPUs; CPU and memory aside)
            fit = max(1, math.floor(free.get(c.pool_id, 0.0) / per_replica + 1e-9))
            slots[c.site] = slots.get(c.site, 0) + fit
            best.setdefault(c.site, c)
        cheapest = min((c.hourly_cost_usd for c in ev.candidates), default=None)
        return [
            SiteOption(
                site=site,
                intensity_gco2_per_kwh=c.intensity_gco2_per_kwh,
                score=c.score,
                feasible_slots=slots[site],
            )
            for site, c in best.items()
        ], cheapest

    async def _remove(
        self,
        svc: Service,
        replicas: Sequence[tuple[Job, Placement | None]],
        count: int,
        *,
        why: str,
    ) -> list[str]:
        # Replicas not placed yet go first: they serve nothing and hold no site.
        done: list[str] = []
        unplaced = [j for j, p in replicas if p is None][:count]
        for job in unplaced:
            if await self._stop(job.id, f"{why}: not placed yet"):
                done.append(f"-1 {job.id} ({why}: not placed yet)")
        placed = [(j, p) for j, p in replicas if p is not None]
        if count <= len(unplaced) or not placed:
            return done
        intensity = await self._intensities()
        views = [
            ReplicaView(
                id=j.id,
                site=p.site,
                intensity_gco2_per_kwh=intensity.get(p.site),
                ready=j.state is JobState.RUNNING,
                started_at=p.started_at or p.created_at,
            )
            for j, p in placed
        ]
        for replica_id, reason in choose_removals(
            count=count - len(unplaced), replicas=views, critical_share=svc.spec.critical_share
        ):
            if await self._stop(replica_id, f"{why}: {reason}"):
                done.append(f"-1 {replica_id} ({why}: {reason})")
        return done

    async def _stop(self, job_id: str, why: str) -> bool:
        try:
            await self._loop.cancel(job_id, tenant=None, reason="scaled_down")
        except (JobAlreadyFinished, JobNotFound):  # it ended meanwhile: nothing to stop
            return False
        log.info("replica %s stopped (%s)", job_id, why)
        return True

    async def _intensities(self) -> dict[str, float]:
        """Each site's grid intensity now, as the scheduler sees it."""
        out: dict[str, float] = {}
        for site in await self._store.sites():
            value = await self._loop.intensity_now(site.grid_zone)
            if value is not None:
                out[site.name] = value
        return out

    async def _drain(self, svc: Service, replicas: Sequence[tuple[Job, Placement | None]]) -> None:
        for job, _ in replicas:
            await self._stop(job.id, "service deleted")
        if not await self._store.replicas(svc.id):
            await self._store.finish_delete(svc.id)
            self._states.pop(svc.id, None)
            self._cold.pop(svc.id, None)
            for memo in (self._recent, self._minute, self._forecasters):
                memo.pop(svc.id, None)
            self._decided.discard(svc.id)
            for kind in ("desired", "ready"):
                self._metrics.service_replicas.labels(service=svc.id, kind=kind).set(0)
            log.info("service %s: drained and deleted", svc.id)

    async def _measure_startups(self, replicas: Sequence[tuple[Job, Placement | None]]) -> None:
        """Each replica's placement-to-ready time, once, into its site's moving average,
        which the database remembers for the next leaseholder."""
        for job, p in replicas:
            if p is None or p.started_at is None or job.id in self._seen_running:
                continue
            self._seen_running.add(job.id)
            took = max(0.0, (p.started_at - p.created_at).total_seconds())
            before = self._startup_s.get(p.site)
            now = took if before is None else before + _STARTUP_WEIGHT * (took - before)
            self._startup_s[p.site] = now
            await self._store.remember_startup(p.site, seconds=now)

    def _cold_start(self, svc: Service, desired: int, ready: int, now: datetime) -> None:
        """Time from waking at zero to the first ready replica, into the metrics."""
        cold = self._cold.get(svc.id)
        if cold is None and svc.desired == 0 and desired > 0 and ready == 0:
            self._cold[svc.id] = _Cold(since=now)
        elif cold is not None and ready > 0:
            took = (now - cold.since).total_seconds()
            self._metrics.cold_start_seconds.observe(took)
            log.info("service %s: cold start took %.1f s", svc.id, took)
            del self._cold[svc.id]


def _hourly(p: Placement) -> float:
    """What a placed replica costs per hour."""
    return p.price_per_gpu_hour * p.gpu_milli / 1000
