"""The burster: the broker's burst duties, `plan_capacity` and `reclaim_idle`.

`plan_capacity` first refreshes (`Keeper.refresh`: nodes that joined, capacity to the
ledger, jobs placed on it), resumes bursts whose provider call never returned, reads the
planner's inputs (`broker.burst.gather`), plans (`broker.burst.planner`) and starts each
action. An action is recorded before its provider call and its id is the call's request id,
so a retry or a resume after a crash gets the same instances back instead of new ones. A
target that refuses (no capacity in any zone, credentials rejected) is recorded as a
failed burst, which the failure memory reads, and the plan is made again without it: the
same jobs fail over to the next best target in the same pass. A throttled or flaky call
leaves the action requested, to be resumed next pass.

`reclaim_idle` refreshes, then lets `Keeper.reclaim` release what is idle past its TTL,
never joined, or stray. Each returns a one-line summary; calls are serialised by a lock
because the scheduler may run both at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from broker.burst import planner
from broker.burst.accounting import day_start, fleet_state
from broker.burst.gather import (
    ShortfallSource,
    could_run,
    offers_of,
    peak_shortfall,
    waiting_jobs,
)
from broker.burst.keeper import Keeper
from broker.burst.model import BurstAction, Fleet, Offer, OfferKey, Plan, WaitingJob
from broker.burst.settings import BurstSettings
from broker.db.capacity import CapacityStore
from broker.db.repository import Store
from broker.domain.capacity import ActionKind, ActionState, BurstInstance, CapacityAction
from broker.domain.clock import Clock
from broker.domain.engine import Engine
from broker.domain.fleet import GpuPool
from broker.domain.jobs import Job
from broker.domain.latency import LatencyMatrix
from broker.scheduling.apply import Applier
from broker.scheduling.conditions import read_hourly
from broker.scheduling.inventory import driven_sites
from carbon.base import CarbonSource
from connectors.base import Connector, SiteInventory
from connectors.errors import CapacityUnavailable, ConnectorError, TransientError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Inputs:
    """What a planning pass reads: the targets' offers, the waiting work, the forecast."""

    offers: list[Offer]
    unreachable: dict[str, str]  # target -> why its inventory could not be read
    waiting: list[WaitingJob]
    short_gpus: dict[str, float]
    short_any_gpus: float


class Burster:
    def __init__(
        self,
        *,
        settings: BurstSettings,
        store: Store,
        capacity: CapacityStore,
        connectors: Mapping[str, Connector],
        engine: Engine,
        applier: Applier,
        latency: LatencyMatrix,
        carbon: CarbonSource,
        clock: Clock,
        forecast: ShortfallSource | None = None,
        on_capacity: Callable[[], None] | None = None,
    ) -> None:
        """`engine`, `applier` and `latency` are the scheduling loop's
        (`SchedulingLoop.engine`, `.applier`), so bursts and placements judge jobs alike and
        apply decisions alike; `forecast` gives the demand shortfall (the
        `DemandService`; none: bursts for waiting work only); `on_capacity` is called when
        burst capacity joined the ledger (`SchedulingLoop.wake(capacity_changed=True)`)."""
        unknown = {s for t in settings.targets for s in (t.provider, t.joins)} - set(connectors)
        if unknown:
            raise ValueError(f"burst targets name sites not configured: {sorted(unknown)}")
        self._settings = settings
        self._store = store
        self._capacity = capacity
        self._connectors = connectors
        self._engine = engine
        self._latency = latency
        self._carbon = carbon
        self._clock = clock
        self._forecast = forecast
        self._lock = asyncio.Lock()
        self.keeper = Keeper(
            settings=settings,
            store=store,
            capacity=capacity,
            connectors=connectors,
            engine=engine,
            applier=applier,
            latency=latency,
            carbon=carbon,
            clock=clock,
            needs=self._needs,
            on_capacity=on_capacity or (lambda: None),
        )

    async def plan_capacity(self) -> str:
        """Burst for waiting work and the forecast; a one-line summary."""
        if not self._settings.enabled or not self._settings.targets:
            return "burst is off"
        async with self._lock:
            notes = [n for n in [await self.keeper.refresh()] if n]
            notes += await self._resume()
            now = self._clock.now()
            inputs = await self._inputs(now)
            plan = Plan()
            refused: set[OfferKey] = set()  # this pass, whatever the failure memory's length
            for _ in range(len(inputs.offers) + 1):  # each refusal takes an offer out
                fleet = await self._fleet(now, inputs.offers)
                later = now + timedelta(microseconds=1)
                fleet = replace(
                    fleet, failed_until={**fleet.failed_until, **dict.fromkeys(refused, later)}
                )
                plan = self._plan(now, inputs, fleet)
                again = False
                for action in plan.actions:
                    outcome, again = await self._start(action, now=now)
                    notes.append(outcome)
                    if again:
                        refused.add(action.offer.key)
                        break  # plan again without it: the jobs fail over
                if not again:
                    break
        notes += [f"skipped ({s.reason.value}) {s.detail}" for s in plan.skipped]
        notes += [f"{site} unreachable: {why}" for site, why in sorted(inputs.unreachable.items())]
        return "; ".join(notes) or "no burst needed"

    async def could_serve(self, job: Job) -> bool:
        """Whether a burst target could run `job` once its instances joined: a job too big
        for every private pool is accepted when bursting can serve it (submission check)."""
        if not self._settings.enabled:
            return False
        offers, shapes, _ = await self._offers(self._clock.now())
        sites = {s.name: s for s in await driven_sites(self._store, self._connectors)}
        return any(
            o.joins_site in sites
            and o.pool_id in shapes
            and could_run(job, shapes[o.pool_id], joined=sites[o.joins_site], latency=self._latency)
            for o in offers
        )

    async def preview(self) -> tuple[Plan, dict[str, str]]:
        """What `plan_capacity` would start now, without starting or recording anything
        (for `GET /v1/forecasts/capacity`); plus the targets that did not answer."""
        now = self._clock.now()
        inputs = await self._inputs(now)
        plan = self._plan(now, inputs, await self._fleet(now, inputs.offers))
        return plan, inputs.unreachable

    async def refresh(self) -> str:
        """Match instances to nodes; new capacity goes to the ledger and its jobs first."""
        async with self._lock:
            return await self.keeper.refresh() or "nothing changed"

    async def reclaim_idle(self) -> str:
        """Release idle, never-joined and stray burst capacity; a one-line summary."""
        if not self._settings.targets:
            return "no burst targets"
        async with self._lock:
            notes = [n for n in [await self.keeper.refresh()] if n]
            notes += await self.keeper.reclaim()
        return "; ".join(notes) or "nothing to reclaim"

    async def visible(self, inv: SiteInventory) -> SiteInventory:
        """A site's inventory as the ledger should have it: a joined cluster's without the
        nodes of released burst instances, nor of instances the burster has not seen join
        yet (it adds those itself, and gives them to their jobs first). Pass inventories
        through this before `Store.sync_site` anywhere else, e.g. the inventory refresh."""
        return await self.keeper.visible(inv)

    # -- starting -------------------------------------------------------------------------

    async def _start(self, action: BurstAction, *, now: datetime) -> tuple[str, bool]:
        """Record the action, then provision it; (summary, whether the target refused)."""
        record = CapacityAction(
            id=action_id(action, now=now),
            kind=ActionKind.BURST,
            provider_site=action.provider_site,
            joins_site=action.joins_site,
            gpu_model=action.gpu_model,
            count=action.count,
            spot=action.spot,
            reason=action.reason,
            requested_at=now,
            usd_per_hour=action.usd_per_hour,
            gco2e_per_hour=action.gco2e_per_hour,
            state=ActionState.REQUESTED,
            for_jobs=action.for_jobs,
            tenants=action.tenants,
        )
        await self._capacity.record_action(record)
        return await self._provision(record)

    async def _provision(self, record: CapacityAction) -> tuple[str, bool]:
        """Ask the provider for the action's instances, with the action's id as request id."""
        connector = self._connectors[record.provider_site]
        what = f"{record.count} x {record.gpu_model} on {record.provider_site}"
        try:
            got = await connector.provision(
                gpu_model=record.gpu_model,
                count=record.count,
                spot=record.spot,
                request_id=record.id,
            )
        except TransientError as exc:
            log.warning("burst %s: %s; resumed next pass", record.id, exc)
            return f"{what} pending ({record.id}: {exc})", False
        except ConnectorError as exc:  # no capacity anywhere, credentials, a refused request
            tried = exc.tried if isinstance(exc, CapacityUnavailable) else ()
            detail = f"{exc}" + (f" (tried {', '.join(tried)})" if tried else "")
            await self._capacity.mark_failed(record.id, at=self._clock.now(), detail=detail)
            log.warning("burst %s refused: %s", record.id, detail)
            return f"{what} refused ({type(exc).__name__}), failing over", True
        # Times are the broker's clock, not the provider's: cost and timeouts count from
        # when the provider answered.
        now = self._clock.now()
        count = max(1, record.count)
        per_g = None if record.gco2e_per_hour is None else record.gco2e_per_hour / count
        await self._capacity.add_instances(
            record.id,
            [
                BurstInstance(
                    provider_site=record.provider_site,
                    instance_id=inst.id,
                    action_id=record.id,
                    gpu_model=inst.gpu_model or record.gpu_model,
                    gpus=inst.gpus,
                    zone=inst.zone,
                    spot=inst.spot,
                    usd_per_hour=record.usd_per_hour / count,
                    gco2e_per_hour=per_g,
                    launched_at=now,
                    provider_id=inst.extra.get("provider_id", ""),
                )
                for inst in got
            ],
        )
        zones = ", ".join(sorted({i.zone for i in got}))
        return f"started {what} in {zones} ({record.id})", False

    async def _resume(self) -> list[str]:
        """Bursts recorded whose provider call never returned: ask again, or give up."""
        notes = []
        for record in await self._capacity.open_actions():
            if record.state is not ActionState.REQUESTED or record.instance_ids:
                continue
            age = (self._clock.now() - record.requested_at).total_seconds()
            if age >= self._settings.join_timeout_s:
                await self._capacity.mark_failed(
                    record.id, at=self._clock.now(), detail="the provider call never completed"
                )
                notes.append(f"gave up {record.id}")
            elif record.provider_site in self._connectors:
                notes.append((await self._provision(record))[0])
        return notes

    # -- inputs -------------------------------------------------------------------------

    async def _inputs(self, now: datetime) -> _Inputs:
        offers, shapes, unreachable = await self._offers(now)
        waiting = await self._waiting(now, offers=offers, shapes=shapes)
        short, short_any = await self._shortfall(now)
        return _Inputs(
            offers=offers,
            unreachable=unreachable,
            waiting=waiting,
            short_gpus=short,
            short_any_gpus=short_any,
        )

    def _plan(self, now: datetime, inputs: _Inputs, fleet: Fleet) -> Plan:
        return planner.plan(
            now=now,
            waiting=inputs.waiting,
            offers=inputs.offers,
            fleet=fleet,
            settings=self._settings,
            latency=self._latency,
            short_gpus=inputs.short_gpus,
            short_any_gpus=inputs.short_any_gpus,
        )

    async def _offers(
        self, now: datetime
    ) -> tuple[list[Offer], dict[str, GpuPool], dict[str, str]]:
        """Every target's offers, their shapes by pool id, and targets that did not answer."""
        offers: list[Offer] = []
        shapes: dict[str, GpuPool] = {}
        unreachable: dict[str, str] = {}
        for target in self._settings.targets:
            try:
                inv = await self._connectors[target.provider].inventory()
            except ConnectorError as exc:
                unreachable[target.provider] = str(exc)
                continue
            reading = await self._carbon.current(inv.site.grid_zone, at=now)
            intensity = None if reading is None else reading.gco2_per_kwh
            offers += offers_of(
                inv,
                joins=target.joins,
                intensity=intensity,
                power_kw=self._engine.settings.power_kw,
            )
            shapes.update({p.id: p for p in inv.pools})
        return offers, shapes, unreachable

    async def _waiting(
        self, now: datetime, *, offers: Sequence[Offer], shapes: Mapping[str, GpuPool]
    ) -> list[WaitingJob]:
        jobs = await self._store.queued_jobs(limit=self._settings.queue_limit)
        if not jobs:
            return []
        sites = await driven_sites(self._store, self._connectors)
        longest_h = max(j.spec.estimated_duration_s for j in jobs) // 3600 + 1
        table = await read_hourly(
            self._carbon, {s.grid_zone for s in sites}, start=now, hours=int(longest_h)
        )
        return waiting_jobs(
            jobs,
            now=now,
            engine=self._engine,
            sites=sites,
            pools=await self._store.pools(),
            carbon=table,
            latency=self._latency,
            offers=offers,
            shapes=shapes,
            wait_targets=self._settings.wait_target_s,
        )

    async def _shortfall(self, now: datetime) -> tuple[dict[str, float], float]:
        """The forecast's peak shortfall per model over the look-ahead (none without one)."""
        if self._forecast is None:
            return {}, 0.0
        outlook = await self._forecast.outlook(hours=self._settings.lookahead_h)
        return peak_shortfall(outlook.shortfalls)

    async def _needs(self, now: datetime) -> dict[str, float]:
        """Burst GPUs per model the forecast still needs: idle ones are kept for it."""
        return (await self._shortfall(now))[0]

    async def _fleet(self, now: datetime, offers: Sequence[Offer]) -> Fleet:
        cap = self._capacity
        today = await cap.instances_between(start=day_start(now), end=now)
        bursts = await cap.actions_by_id({i.action_id for i in today})
        memory_s = self._settings.failure_memory_s
        return fleet_state(
            now=now,
            alive=await cap.alive_instances(),
            open_actions=await cap.open_actions(),
            failures=await cap.failures_since(now - timedelta(seconds=memory_s)),
            today=today,
            tenants_of={a.id: a.tenants for a in bursts},
            gpus_per_instance={o.key: o.gpus_per_instance for o in offers},
            failure_memory_s=memory_s,
        )


def action_id(action: BurstAction, *, now: datetime) -> str:
    """A burst's id, also its provider request id: when, and a digest of what it asks for."""
    what = (action.provider_site, action.gpu_model, str(action.spot), str(action.count))
    key = "\n".join((*what, *action.for_jobs))
    return f"burst-{now:%Y%m%d-%H%M%S}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
