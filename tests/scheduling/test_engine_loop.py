"""The engine's decisions applied through the real store, on SQLite and PostgreSQL.

Preemption, deferral and borrowing end to end: the San Jose site of the demo fleet alone
(16 H100 in 2 nodes of 8, 16 T4 in 4 nodes of 4), a simulator slow enough that nothing
finishes, a manual clock, and `run_once` called by hand — no sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.models import JobRow
from broker.db.repository import Store
from broker.domain.clock import ManualClock
from broker.domain.conditions import Condition, ConditionType, Reason
from broker.domain.enums import JobKind, JobState, Tier
from broker.domain.jobs import Job, JobSpec, Placement, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.metrics import Metrics
from broker.scheduling.loop import SchedulingLoop
from carbon.base import CarbonSource, IntensityReading
from connectors.base import BuildContext
from connectors.sim.connector import SimConnector
from connectors.threads import Blocking
from tests.conftest import fast_settings

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
SITE = "sanjose-private"
ZONE = "US-CAL-CISO"
H100_POOL = f"{SITE}/H100-0"


class ValleySource:
    """A carbon source: `dirty` everywhere except clean hours given per zone."""

    name = "valley"

    def __init__(
        self, *, clean_hours: Mapping[str, tuple[datetime, ...]] | None = None, dirty: float = 400.0
    ) -> None:
        self._clean = dict(clean_hours or {})
        self._dirty = dirty

    def _value(self, zone: str, hour: datetime) -> float:
        return 50.0 if hour in self._clean.get(zone, ()) else self._dirty

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        hour = at.replace(minute=0, second=0, microsecond=0)
        return IntensityReading(
            zone=zone, at=hour, gco2_per_kwh=self._value(zone, hour), source="valley"
        )

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        out = []
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            out.append(
                IntensityReading(
                    zone=zone,
                    at=hour,
                    gco2_per_kwh=self._value(zone, hour),
                    source="valley",
                    forecast=True,
                )
            )
            hour += H
        return out


@dataclass
class Rig:
    store: Store
    loop: SchedulingLoop
    clock: ManualClock
    conn: SimConnector
    metrics: Metrics
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def submit(self, spec: JobSpec, *, tenant: str = "vision-team") -> Job:
        """Create a pending job, then move the clock a second so submission order is age order.

        (Jobs of one tenant and tier with equal `created_at` are ordered by their random id.)
        """
        job, created = await self.store.create_job(tenant=tenant, spec=spec)
        assert created
        self.clock.advance(1)
        return job

    async def state(self, job: Job) -> JobState:
        return (await self.store.get_job(job.id)).job.state

    async def h100_used(self) -> tuple[int, ...]:
        (pool,) = [p for p in await self.store.pools() if p.id == H100_POOL]
        return pool.node_used()

    async def not_before(self, job: Job) -> datetime | None:
        async with self.sessions() as s:
            return await s.scalar(select(JobRow.not_before).where(JobRow.id == job.id))

    def preemptions(self) -> float:
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "broker_preemptions_total":
                    return float(sample.value)
        return 0.0


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(database_url: str) -> AsyncIterator[MakeRig]:
    made: list[Rig] = []
    pool = Blocking(1)

    async def make(
        *, overrides: Mapping[str, Any] | None = None, carbon: CarbonSource | None = None
    ) -> Rig:
        settings = fast_settings(database_url, **{"sim.speed": 1.0, **(overrides or {})})
        site = next(s for s in settings.sites if s.name == SITE)
        clock = ManualClock(NOW)
        engine = create_engine(database_url)
        await upgrade(engine)
        sessions = session_factory(engine)
        store = Store(sessions=sessions, clock=clock)
        context = BuildContext(
            config_dir=settings.config_dir, blocking=pool, clock=clock, sim=settings.sim
        )
        conn = SimConnector.from_settings(site=site, context=context)
        inv = await conn.inventory()
        await store.sync_site(inv.site, inv.pools)
        metrics = Metrics()
        loop = SchedulingLoop(
            store=store,
            connectors={site.name: conn},
            carbon=carbon or ValleySource(),
            latency=LatencyMatrix({}),
            settings=settings.scheduler,
            clock=clock,
            metrics=metrics,
        )
        rig = Rig(
            store=store,
            loop=loop,
            clock=clock,
            conn=conn,
            metrics=metrics,
            engine=engine,
            sessions=sessions,
        )
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.conn.close()
        await rig.engine.dispose()
    pool.shutdown()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sim:") and not t.done()]


def h100(
    gpus: int,
    name: str,
    tier: Tier = Tier.P2,
    *,
    deadline: datetime | None = None,
    preemptible: bool | None = None,
) -> JobSpec:
    return JobSpec(
        name=name,
        tier=tier,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=gpus, gpu_models=("H100",)),
        workload=Workload(image="i"),
        estimated_duration_s=3600,
        deadline=deadline,
        preemptible=preemptible,
    )


async def runs_on_site(rig: Rig, job_id: str) -> bool:
    """Whether the site has the job's run (the simulator's run book: what any replica sees)."""
    return job_id in await rig.conn.owned()


async def fill_with_p3(rig: Rig, *, older_ago: timedelta, newer_ago: timedelta) -> tuple[Job, Job]:
    """Both H100 nodes taken by one running 8-GPU P3 job each, started `*_ago` before now."""
    older = await rig.submit(h100(8, "exp-older", Tier.P3))
    newer = await rig.submit(h100(8, "exp-newer", Tier.P3))
    assert await rig.loop.run_once() == 2
    now = rig.clock.now()
    assert await rig.store.mark_running(older.id, at=now - older_ago)
    assert await rig.store.mark_running(newer.id, at=now - newer_ago)
    assert await rig.h100_used() == (8000, 8000)
    return older, newer


# ---- (1) preemption end to end ----------------------------------------------------------


async def test_p1_preempts_the_p3_job_that_loses_least(make_rig: MakeRig) -> None:
    rig = await make_rig()
    older, newer = await fill_with_p3(rig, older_ago=2 * H, newer_ago=H)
    newer_nodes = (await rig.store.get_job(newer.id)).placement.node_names  # type: ignore[union-attr]
    assert await runs_on_site(rig, newer.id)

    p1 = await rig.submit(h100(8, "urgent", Tier.P1))
    assert await rig.loop.run_once() == 1

    assert await rig.state(p1) is JobState.SCHEDULED
    assert await rig.state(older) is JobState.RUNNING  # 2 h of work would be lost: kept
    victim = await rig.store.get_job(newer.id)
    assert victim.job.state is JobState.PENDING
    assert [e.to_state for e in victim.events] == [
        JobState.PENDING,
        JobState.SCHEDULED,
        JobState.RUNNING,
        JobState.PREEMPTED,
        JobState.PENDING,
    ]
    assert [e.reason for e in victim.events] == [
        "submitted",
        "placed",
        "started",
        "preempted",
        "requeued",
    ]
    assert victim.events[3].detail.startswith(
        f"for P1 job {p1.id}: preempting 1 job(s) {newer.id} (P3, vision-team)"
    )
    assert victim.placement is not None and victim.placement.ended_at is not None
    # its condition says why, without naming the other tenant's job
    assert victim.job.condition is not None
    assert (victim.job.condition.type, victim.job.condition.reason) == (
        ConditionType.PREEMPTED,
        Reason.PREEMPTED_BY_HIGHER_TIER,
    )
    assert victim.job.condition.message == "preempted for a P1 job"
    assert (await rig.store.get_job(p1.id)).job.condition is None

    assert await rig.h100_used() == (8000, 8000)
    active = {job.id: p for job, p in await rig.store.active_placements()}
    assert set(active) == {older.id, p1.id}
    assert active[p1.id].node_names == newer_nodes
    assert {w.job_id for w in await rig.store.running_work()} == {older.id, p1.id}

    assert not await runs_on_site(rig, newer.id)  # the site was told to stop it
    assert await runs_on_site(rig, older.id) and await runs_on_site(rig, p1.id)
    assert rig.preemptions() == 1


async def test_min_runtime_keeps_just_started_work_until_it_has_run(make_rig: MakeRig) -> None:
    rig = await make_rig()  # min_runtime_s is 300 in the demo config (the default)
    older, newer = await fill_with_p3(
        rig, older_ago=timedelta(seconds=120), newer_ago=timedelta(seconds=60)
    )
    p1 = await rig.submit(h100(8, "urgent", Tier.P1))
    assert await rig.loop.run_once() == 0
    assert await rig.state(p1) is JobState.PENDING
    assert await rig.state(older) is JobState.RUNNING
    assert await rig.state(newer) is JobState.RUNNING

    rig.clock.advance(240)  # older has run 360 s, newer 300 s: both may go, newer loses less
    rig.loop.wake(capacity_changed=True)  # the periodic pass would retry the stuck P1
    assert await rig.loop.run_once() == 1
    assert await rig.state(p1) is JobState.SCHEDULED
    assert await rig.state(newer) is JobState.PENDING
    assert await rig.state(older) is JobState.RUNNING


# ---- (2) atomicity ----------------------------------------------------------------------


def _placement(job: Job, *, nodes: tuple[str, ...]) -> Placement:
    """The job on every GPU of `nodes` (by name) of the H100 pool."""
    demand = job.spec.resources.demand
    return Placement(
        job_id=job.id,
        site=SITE,
        pool_id=H100_POOL,
        gpu_milli=8000 * len(nodes),
        price_per_gpu_hour=2.5,
        spot=False,
        estimated_cost_usd=20.0,
        estimated_gco2=None,
        created_at=NOW,
        node_names=nodes,
        node_gpus=(tuple(range(8)),) * len(nodes),
        cpu_milli=demand.cpu_milli,
        memory_mb=demand.memory_mb,
    )


async def _assert_untouched(rig: Rig, victim: Job, *, events: int) -> None:
    detail = await rig.store.get_job(victim.id)
    assert detail.job.state is JobState.RUNNING
    assert len(detail.events) == events
    assert detail.placement is not None and detail.placement.ended_at is None
    assert victim.id in {job.id for job, _ in await rig.store.active_placements()}
    assert await rig.h100_used() == (8000, 8000)


async def test_a_place_whose_job_was_cancelled_preempts_nothing(make_rig: MakeRig) -> None:
    rig = await make_rig()
    _, victim = await fill_with_p3(rig, older_ago=2 * H, newer_ago=H)
    nodes = (await rig.store.get_job(victim.id)).placement.node_names  # type: ignore[union-attr]
    events = len((await rig.store.get_job(victim.id)).events)
    p1 = await rig.submit(h100(8, "urgent", Tier.P1))
    await rig.store.cancel(p1.id, tenant=None, reason="cancelled_by_user")

    got = await rig.store.place(
        job=p1,
        placement=_placement(p1, nodes=nodes),
        reason="placed",
        preempt=[victim.id],
        preempt_reason="test",
    )
    assert got is None
    await _assert_untouched(rig, victim, events=events)
    assert await rig.state(p1) is JobState.CANCELLED


async def test_a_place_that_cannot_take_its_nodes_rolls_the_preemption_back(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    other, victim = await fill_with_p3(rig, older_ago=2 * H, newer_ago=H)
    other_nodes = (await rig.store.get_job(other.id)).placement.node_names  # type: ignore[union-attr]
    events = len((await rig.store.get_job(victim.id)).events)
    p1 = await rig.submit(h100(8, "urgent", Tier.P1))

    # preempting `victim` frees its node, but the placement asks for the other one
    got = await rig.store.place(
        job=p1,
        placement=_placement(p1, nodes=other_nodes),
        reason="placed",
        preempt=[victim.id],
        preempt_reason="test",
    )
    assert got is None
    await _assert_untouched(rig, victim, events=events)
    assert await rig.state(p1) is JobState.PENDING
    assert (await rig.store.get_job(p1.id)).placement is None


async def test_a_place_with_one_stale_victim_preempts_none(make_rig: MakeRig) -> None:
    rig = await make_rig()
    _, victim = await fill_with_p3(rig, older_ago=2 * H, newer_ago=H)
    nodes = (await rig.store.get_job(victim.id)).placement.node_names  # type: ignore[union-attr]
    events = len((await rig.store.get_job(victim.id)).events)
    waiting = await rig.submit(h100(8, "not-running", Tier.P3))  # pending: not preemptible now
    p1 = await rig.submit(h100(8, "urgent", Tier.P1))

    got = await rig.store.place(
        job=p1,
        placement=_placement(p1, nodes=nodes),
        reason="placed",
        preempt=[victim.id, waiting.id],
        preempt_reason="test",
    )
    assert got is None
    await _assert_untouched(rig, victim, events=events)
    assert await rig.state(waiting) is JobState.PENDING
    assert await rig.state(p1) is JobState.PENDING


# ---- (3) deferral -----------------------------------------------------------------------


async def test_a_p2_job_waits_for_the_clean_valley_then_runs(make_rig: MakeRig) -> None:
    valley = (NOW + 3 * H, NOW + 4 * H)
    rig = await make_rig(carbon=ValleySource(clean_hours={ZONE: valley}))
    job = await rig.submit(h100(2, "train", deadline=NOW + 12 * H))

    assert await rig.loop.run_once() == 0
    detail = await rig.store.get_job(job.id)
    assert detail.job.state is JobState.DEFERRED
    assert await rig.not_before(job) == NOW + 3 * H
    last = detail.events[-1]
    assert (last.to_state, last.reason) == (JobState.DEFERRED, "deferred")
    assert last.detail == f"starting at {(NOW + 3 * H).isoformat()} on {SITE} saves 87.5%"
    assert detail.placement is None
    assert detail.job.condition == Condition(
        type=ConditionType.DEFERRED,
        reason=Reason.CARBON_WINDOW,
        message=f"until {(NOW + 3 * H).isoformat()}: {last.detail}",
        since=NOW + timedelta(seconds=1),  # the clock moved a second after submission
    )

    rig.clock.advance((NOW + 3 * H - rig.clock.now()).total_seconds() - 1)  # 1 s early: held
    assert await rig.loop.run_once() == 0
    assert await rig.state(job) is JobState.DEFERRED

    rig.clock.advance(1)
    assert await rig.loop.run_once() == 1
    detail = await rig.store.get_job(job.id)
    assert detail.job.state is JobState.SCHEDULED
    assert [(e.to_state, e.reason) for e in detail.events] == [
        (JobState.PENDING, "submitted"),
        (JobState.DEFERRED, "deferred"),
        (JobState.PENDING, "window_reached"),
        (JobState.SCHEDULED, "placed"),
    ]
    assert detail.placement is not None and detail.placement.pool_id == H100_POOL
    assert detail.placement.created_at == NOW + 3 * H
    assert detail.job.condition is None  # placed: nothing to wait for


async def test_a_job_without_a_deadline_runs_now_despite_a_valley(make_rig: MakeRig) -> None:
    rig = await make_rig(carbon=ValleySource(clean_hours={ZONE: (NOW + 3 * H,)}))
    job = await rig.submit(h100(2, "train"))
    assert await rig.loop.run_once() == 1
    assert await rig.state(job) is JobState.SCHEDULED
    assert await rig.not_before(job) is None


# ---- (4) quotas through the settings ----------------------------------------------------


async def test_preemptible_work_over_quota_is_placed_as_borrowed(make_rig: MakeRig) -> None:
    rig = await make_rig(overrides={"scheduler.quotas": {"vision-team": {"P2": 8}}})
    in_quota = await rig.submit(h100(8, "train"))
    extra = await rig.submit(h100(8, "experiment", Tier.P3))  # no P3 quota: borrows
    assert await rig.loop.run_once() == 2

    borrowed = {w.job_id: w.borrowed for w in await rig.store.running_work()}
    assert borrowed == {in_quota.id: False, extra.id: True}
    placement = (await rig.store.get_job(extra.id)).placement
    assert placement is not None and placement.borrowed
    assert await rig.h100_used() == (8000, 8000)


async def test_non_preemptible_work_over_quota_waits(make_rig: MakeRig) -> None:
    """Beyond its nominal, non-preemptible work takes only GPUs no other quota reserves:
    here the 16 T4 and 8 H100 left are less than nlp-team's unused 32 (docs/quotas.md)."""
    quotas = {"vision-team": {"P2": 8}, "nlp-team": {"P2": 32}}
    rig = await make_rig(overrides={"scheduler.quotas": quotas})
    await rig.submit(h100(8, "train"))
    extra = await rig.submit(h100(8, "more-training"))
    assert await rig.loop.run_once() == 1
    assert await rig.state(extra) is JobState.PENDING
    assert await rig.h100_used() in {(8000, 0), (0, 8000)}
    condition = (await rig.store.get_job(extra.id)).job.condition
    assert condition is not None and condition.reason is Reason.QUOTA_RESERVED
    assert condition.since == rig.clock.now()


async def test_a_waiting_jobs_condition_is_written_only_when_it_changes(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()
    for name in ("one", "two"):  # both H100 nodes
        await rig.submit(h100(8, name))
    big = await rig.submit(h100(8, "big"))
    assert await rig.loop.run_once() == 2
    first = (await rig.store.get_job(big.id)).job.condition
    assert first is not None
    assert (first.type, first.reason) == (ConditionType.WAITING, Reason.NO_CAPACITY)
    assert "capacity" in first.message
    version = (await rig.store.get_job(big.id)).job.version

    rig.clock.advance(60)
    rig.loop.wake(capacity_changed=True)  # planned again: the same reason
    assert await rig.loop.run_once() == 0
    again = (await rig.store.get_job(big.id)).job
    assert again.condition == first  # not rewritten: the same since
    assert again.version == version  # a condition is not a state change


async def test_a_reclaimed_job_says_its_quota_owner_took_it_back(make_rig: MakeRig) -> None:
    quotas = {"vision-team": {"P2": 8}, "nlp-team": {"P2": 8}}
    rig = await make_rig(overrides={"scheduler.quotas": quotas})
    await rig.submit(h100(8, "train"))
    lent = await rig.submit(h100(8, "train-more", preemptible=True))
    assert await rig.loop.run_once() == 2
    assert await rig.store.mark_running(lent.id, at=rig.clock.now() - H)
    await rig.submit(h100(8, "nlp-train"), tenant="nlp-team")
    assert await rig.loop.run_once() == 1
    c = (await rig.store.get_job(lent.id)).job.condition
    assert c is not None and c.reason is Reason.QUOTA_RECLAIMED
    assert "borrowed" in c.message


async def test_an_owner_reclaims_borrowed_gpus(make_rig: MakeRig) -> None:
    quotas = {"vision-team": {"P2": 8}, "nlp-team": {"P2": 8}}
    rig = await make_rig(overrides={"scheduler.quotas": quotas})
    own = await rig.submit(h100(8, "train"))
    lent = await rig.submit(h100(8, "train-more", preemptible=True))
    assert await rig.loop.run_once() == 2
    assert {w.job_id: w.borrowed for w in await rig.store.running_work()} == {
        own.id: False,
        lent.id: True,
    }
    for j in (own, lent):
        assert await rig.store.mark_running(j.id, at=rig.clock.now() - H)

    nlp = await rig.submit(h100(8, "nlp-train"), tenant="nlp-team")
    assert await rig.loop.run_once() == 1
    assert await rig.state(nlp) is JobState.SCHEDULED
    assert await rig.state(own) is JobState.RUNNING
    victim = await rig.store.get_job(lent.id)
    assert victim.job.state is JobState.PENDING
    assert [e.reason for e in victim.events][-2:] == ["preempted", "requeued"]
    assert "reclaiming its borrowed quota" in victim.events[-2].detail
    assert {w.job_id: w.borrowed for w in await rig.store.running_work()} == {
        own.id: False,
        nlp.id: False,
    }
