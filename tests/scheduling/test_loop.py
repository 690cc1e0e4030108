"""The scheduling loop without the HTTP layer: what one pass does, and what it skips."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.repository import Store
from broker.domain.clock import SystemClock
from broker.domain.enums import Ability, Health, JobKind, JobState, Tier
from broker.domain.jobs import Job, JobSpec, Placement, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.domain.rules import RejectReason
from broker.metrics import Metrics
from broker.scheduling.loop import SchedulingLoop
from carbon.static import StaticTableSource
from connectors.base import BuildContext, StatusUpdate
from connectors.errors import AuthFailed
from connectors.sim.connector import SimConnector
from connectors.threads import Blocking
from tests.conftest import fast_settings

SITE = "sanjose-private"
T_LATER = datetime.now(UTC) + timedelta(hours=6)
H100_POOL = f"{SITE}/H100-0"


@dataclass
class Rig:
    store: Store
    loop: SchedulingLoop
    metrics: Metrics

    def evaluations(self) -> float:
        return _sample(self.metrics, "broker_placement_decision_seconds_count")

    def scheduled(self) -> float:
        return _sample(self.metrics, "broker_job_transitions_total", state="scheduled")

    async def h100_used(self) -> tuple[int, ...]:
        (pool,) = [p for p in await self.store.pools() if p.id == H100_POOL]
        return pool.node_used()


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return float(s.value)
    return 0.0


@contextlib.asynccontextmanager
async def rig_on(
    database_url: str,
    *,
    store_type: type[Store] = Store,
    connector_type: type[SimConnector] = SimConnector,
) -> AsyncIterator[Rig]:
    # Only the San Jose site: 16 H100 (2 x 8) and 16 T4 (4 x 4); sim speed slow enough
    # that nothing finishes during a test.
    settings = fast_settings(database_url, **{"scheduler.batch_size": 2, "sim.speed": 1.0})
    site = next(s for s in settings.sites if s.name == SITE)
    clock = SystemClock()
    engine = create_engine(database_url)
    await upgrade(engine)
    store = store_type(sessions=session_factory(engine), clock=clock)
    pool = Blocking(1)
    context = BuildContext(
        config_dir=settings.config_dir, blocking=pool, clock=clock, sim=settings.sim
    )
    conn = connector_type.from_settings(site=site, context=context)
    inv = await conn.inventory()
    await store.sync_site(inv.site, inv.pools)
    metrics = Metrics()
    loop = SchedulingLoop(
        store=store,
        connectors={site.name: conn},
        carbon=StaticTableSource.default(),
        latency=LatencyMatrix({}),
        settings=settings.scheduler,
        clock=clock,
        metrics=metrics,
    )
    try:
        yield Rig(store=store, loop=loop, metrics=metrics)
    finally:
        await conn.close()
        pool.shutdown()
        await engine.dispose()


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    async with rig_on(database_url) as r:
        yield r


def h100(gpus: int, name: str, tier: Tier = Tier.P2, **kw: Any) -> JobSpec:
    return JobSpec(
        name=name,
        tier=tier,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=gpus, gpu_models=("H100",), **kw),
        workload=Workload(image="i"),
        estimated_duration_s=3600,
    )


async def test_stuck_jobs_are_not_ranked_again_until_capacity_changes(rig: Rig) -> None:
    for i in range(2):
        await rig.store.create_job(tenant="t", spec=h100(8, f"fill{i}"))
    assert await rig.loop.run_once() == 2  # both H100 nodes taken
    for i in range(2):
        await rig.store.create_job(tenant="t", spec=h100(8, f"wait{i}"))
    before = rig.evaluations()
    assert await rig.loop.run_once() == 0
    assert rig.evaluations() - before == 2
    assert await rig.loop.run_once() == 0
    assert rig.evaluations() - before == 2  # the second pass skipped both
    rig.loop.wake(capacity_changed=True)
    assert await rig.loop.run_once() == 0
    assert rig.evaluations() - before == 4


async def test_a_stuck_head_of_queue_does_not_hide_jobs_behind_it(rig: Rig) -> None:
    # batch_size is 2: three gang jobs that can never fit now sit at the head of the queue,
    # and the small job behind them must still be placed within a few passes.
    for i in range(2):
        await rig.store.create_job(tenant="t", spec=h100(8, f"fill{i}"))
    await rig.loop.run_once()
    for i in range(3):
        await rig.store.create_job(tenant="t", spec=h100(8, f"gang{i}", nodes=2))
    small, _ = await rig.store.create_job(
        tenant="t",
        spec=JobSpec(
            name="t4",
            tier=Tier.P2,
            kind=JobKind.TRAINING,
            resources=Resources(gpus=1, gpu_models=("T4",)),
            workload=Workload(image="i"),
            estimated_duration_s=60,
        ),
    )
    placed = 0
    for _ in range(3):
        placed += await rig.loop.run_once()
    assert placed == 1
    assert (await rig.store.get_job(small.id)).job.state is JobState.SCHEDULED


async def test_higher_tiers_are_placed_first_within_a_pass(rig: Rig) -> None:
    p3, _ = await rig.store.create_job(tenant="t", spec=h100(8, "p3", Tier.P3))
    p2, _ = await rig.store.create_job(tenant="t", spec=h100(8, "p2", Tier.P2))
    p1, _ = await rig.store.create_job(tenant="t", spec=h100(8, "p1", Tier.P1))
    await rig.loop.run_once()
    states = {j.id: (await rig.store.get_job(j.id)).job.state for j in (p1, p2, p3)}
    assert states == {p1.id: JobState.SCHEDULED, p2.id: JobState.SCHEDULED, p3.id: JobState.PENDING}


class RacedStore(Store):
    """A store where another replica cancels `victim` just before a pass commits its batch."""

    victim: str | None = None

    async def place_many(self, placements: Sequence[Placement], *, reason: str) -> list[bool]:
        if self.victim is not None:
            await self.cancel(self.victim, tenant=None, reason="cancelled_by_user")
        return await super().place_many(placements, reason=reason)


class RefusingSim(SimConnector):
    """The simulator, except for jobs named "refused" (credentials refused) or "broken" (a bug)."""

    async def dispatch(self, *, job: Job, placement: Placement) -> str:
        if job.spec.name == "refused":
            raise AuthFailed("token expired", site=self.site_name)
        if job.spec.name == "broken":
            raise RuntimeError("connector bug")
        return await super().dispatch(job=job, placement=placement)


async def test_a_pass_commits_its_placements_and_records_the_sites_ids(rig: Rig) -> None:
    jobs = [(await rig.store.create_job(tenant="t", spec=h100(4, f"j{i}")))[0] for i in range(2)]
    assert await rig.loop.run_once() == 2
    for job in jobs:
        detail = await rig.store.get_job(job.id)
        assert detail.job.state is JobState.SCHEDULED
        assert (
            detail.placement is not None
            and detail.placement.external_id == f"sim-{job.id}@{detail.placement.run}"
        )
    assert sum(await rig.h100_used()) == 8000
    assert rig.scheduled() == 2


async def test_a_job_cancelled_before_the_commit_is_skipped_the_rest_placed(
    database_url: str,
) -> None:
    async with rig_on(database_url, store_type=RacedStore) as rig:
        assert isinstance(rig.store, RacedStore)
        gone, kept = [
            (await rig.store.create_job(tenant="t", spec=h100(8, f"j{i}")))[0] for i in range(2)
        ]
        rig.store.victim = gone.id
        assert await rig.loop.run_once() == 1
        detail = await rig.store.get_job(gone.id)
        assert detail.job.state is JobState.CANCELLED and detail.placement is None
        detail = await rig.store.get_job(kept.id)
        assert detail.job.state is JobState.SCHEDULED
        assert (
            detail.placement is not None
            and detail.placement.external_id == f"sim-{kept.id}@{detail.placement.run}"
        )
        assert sorted(await rig.h100_used()) == [0, 8000]
        assert rig.scheduled() == 1


async def test_a_refused_dispatch_requeues_its_job_and_marks_the_site(database_url: str) -> None:
    async with rig_on(database_url, connector_type=RefusingSim) as rig:
        refused, _ = await rig.store.create_job(tenant="t", spec=h100(8, "refused"))
        ok, _ = await rig.store.create_job(tenant="t", spec=h100(8, "ok"))
        assert await rig.loop.run_once() == 2  # both committed; one then came back
        detail = await rig.store.get_job(refused.id)
        assert detail.job.state is JobState.PENDING
        assert [(e.to_state, e.reason) for e in detail.events][-2:] == [
            (JobState.SCHEDULED, "placed"),
            (JobState.PENDING, "dispatch_failed"),
        ]
        assert detail.placement is not None and detail.placement.ended_at is not None
        assert detail.placement.external_id is None
        detail = await rig.store.get_job(ok.id)
        assert (
            detail.placement is not None
            and detail.placement.external_id == f"sim-{ok.id}@{detail.placement.run}"
        )
        assert sorted(await rig.h100_used()) == [0, 8000]
        (site,) = await rig.store.sites()
        assert site.health is Health.AUTH_FAILED


async def test_a_dispatch_that_raises_keeps_the_ids_of_those_sent_before(
    database_url: str,
) -> None:
    async with rig_on(database_url, connector_type=RefusingSim) as rig:
        sent, _ = await rig.store.create_job(tenant="t", spec=h100(8, "ok"))
        await rig.store.create_job(tenant="t", spec=h100(8, "broken"))
        with pytest.raises(RuntimeError, match="connector bug"):
            await rig.loop.run_once()
        detail = await rig.store.get_job(sent.id)
        assert (
            detail.placement is not None
            and detail.placement.external_id == f"sim-{sent.id}@{detail.placement.run}"
        )


async def test_two_loops_on_one_database_never_allocate_the_same_gpus(database_url: str) -> None:
    # Two broker replicas: each sees the same two 8-GPU jobs at the head of the queue
    # (batch_size 2) and the same two free H100 nodes; four such jobs wait.
    async with rig_on(database_url) as one, rig_on(database_url) as two:
        jobs = [
            (await one.store.create_job(tenant="t", spec=h100(8, f"j{i}")))[0] for i in range(4)
        ]
        placed = await asyncio.gather(one.loop.run_once(), two.loop.run_once())
        assert sum(placed) == 2
        assert await one.h100_used() == (8000, 8000)
        (pool,) = [p for p in await one.store.pools() if p.id == H100_POOL]
        assert [u.gpus for u in pool.uses()] == [(1000,) * 8] * 2  # each GPU booked once
        active = [(job.id, p.node_names) for job, p in await one.store.active_placements()]
        assert len({job_id for job_id, _ in active}) == 2
        assert sorted(nodes for _, nodes in active) == [("0",), ("1",)]
        for job in jobs:
            states = [e.to_state for e in (await one.store.get_job(job.id)).events]
            assert states.count(JobState.SCHEDULED) <= 1


class GanglessSim(SimConnector):
    """A site whose connector cannot start multi-node jobs (a cluster without Kueue)."""

    def supports(self, ability: Ability) -> bool:
        return ability is not Ability.GANG and super().supports(ability)


class ProvisionOnlySim(SimConnector):
    """A site that can only add capacity, like a cloud region without a cluster of its own."""

    lacks = frozenset({Ability.DISPATCH, Ability.CANCEL, Ability.FOLLOW})


async def test_the_engine_respects_what_a_sites_connector_lacks(database_url: str) -> None:
    async with rig_on(database_url, connector_type=GanglessSim) as rig:
        gang, _ = await rig.store.create_job(tenant="t", spec=h100(8, "gang", nodes=2))
        single, _ = await rig.store.create_job(tenant="t", spec=h100(8, "single"))
        assert await rig.loop.run_once() == 1
        assert (await rig.store.get_job(single.id)).job.state is JobState.SCHEDULED
        assert (await rig.store.get_job(gang.id)).job.state is JobState.PENDING
        ev = await rig.loop.evaluate(gang, ignore_capacity=True)
        reasons = {r.pool_id: r.reason for r in ev.rejections}
        assert reasons[H100_POOL] is RejectReason.ABILITY
        assert not ev.candidates
    async with rig_on(database_url, connector_type=ProvisionOnlySim) as rig:
        job, _ = await rig.store.create_job(tenant="t", spec=h100(1, "anything"))
        assert await rig.loop.run_once() == 0
        assert (await rig.store.get_job(job.id)).job.state is JobState.PENDING


class RemoteSim(SimConnector):
    """A site that still runs jobs from before the restart (`remote`: job id → its id)."""

    remote: dict[str, str] = {}

    async def owned(self) -> dict[str, str]:
        return {**self.remote, **await super().owned()}

    async def cancel(self, *, job_id: str, external_id: str | None, reason: str) -> None:
        self.remote.pop(job_id, None)
        await super().cancel(job_id=job_id, external_id=external_id, reason=reason)


async def test_reconcile_stops_stale_runs_and_leaves_unknown_ones(database_url: str) -> None:
    async with rig_on(database_url, connector_type=RemoteSim) as rig:
        ended, _ = await rig.store.create_job(tenant="t", spec=h100(1, "ended"))
        await rig.store.cancel(ended.id, tenant=None, reason="cancelled_by_user")
        requeued, _ = await rig.store.create_job(tenant="t", spec=h100(1, "requeued"))
        # waiting for a cleaner hour, holding nothing: a run left over must not be adopted
        assert await rig.store.defer(requeued.id, until=T_LATER, reason="cleaner later")
        running, _ = await rig.store.create_job(tenant="t", spec=h100(1, "running"))
        assert await rig.loop.run_once() == 1
        RemoteSim.remote = {
            ended.id: "gb-ended",
            requeued.id: "gb-requeued",
            "job-from-another-life": "gb-unknown",
        }
        await rig.loop.reconcile()
        assert RemoteSim.remote == {"job-from-another-life": "gb-unknown"}
        assert (await rig.store.get_job(running.id)).job.state is JobState.SCHEDULED


async def test_every_run_that_ends_leaves_a_footprint(rig: Rig) -> None:
    done, _ = await rig.store.create_job(tenant="vision", spec=h100(2, "done"))
    stopped, _ = await rig.store.create_job(tenant="nlp", spec=h100(1, "stopped"))
    never, _ = await rig.store.create_job(tenant="nlp", spec=h100(1, "never"))
    assert await rig.loop.run_once() == 2  # batch_size 2: "never" waits in the queue
    t0 = datetime.now(UTC).replace(microsecond=0)
    for job in (done, stopped):
        await rig.loop.apply(StatusUpdate(job_id=job.id, state=JobState.RUNNING, at=t0, reason="s"))
    end = t0 + timedelta(hours=2)
    await rig.loop.apply(
        StatusUpdate(job_id=done.id, state=JobState.SUCCEEDED, at=end, reason="completed")
    )
    await rig.loop.cancel(stopped.id, tenant=None)
    await rig.loop.cancel(never.id, tenant=None)  # never ran: nothing to count
    runs = await rig.store.footprints(start=t0, end=t0 + timedelta(days=1))
    assert {(r.job_id, r.outcome) for r in runs} == {
        (done.id, "succeeded"),
        (stopped.id, "cancelled"),
    }
    run = next(r for r in runs if r.job_id == done.id)
    assert (run.tenant, run.site, run.gpu_model, run.gpus) == ("vision", SITE, "H100", 2.0)
    assert (run.started_at, run.ended_at, run.gpu_hours) == (t0, end, 4.0)
    assert run.gco2 is not None and run.energy_kwh > 0
    assert run.gco2 == pytest.approx(run.energy_kwh * run.intensity_gco2_per_kwh)
    assert (
        await rig.store.footprints(start=end + timedelta(days=1), end=end + timedelta(days=2)) == []
    )
