"""The scheduling loop without the HTTP layer: what one pass does, and what it skips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from broker.db.engine import create_engine, session_factory, upgrade
from broker.db.repository import Store
from broker.domain.clock import SystemClock
from broker.domain.enums import JobKind, JobState, Tier
from broker.domain.jobs import JobSpec, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.metrics import Metrics
from broker.scheduling.loop import SchedulingLoop
from carbon.static import StaticTableSource
from connectors.sim.connector import SimConnector
from tests.conftest import fast_settings


@dataclass
class Rig:
    store: Store
    loop: SchedulingLoop
    metrics: Metrics

    def evaluations(self) -> float:
        return _sample(self.metrics, "broker_placement_decision_seconds_count")


def _sample(metrics: Metrics, name: str) -> float:
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                return float(s.value)
    return 0.0


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    # Only the San Jose site: 16 H100 (2 x 8) and 16 T4 (4 x 4); sim speed slow enough
    # that nothing finishes during a test.
    settings = fast_settings(database_url, **{"scheduler.batch_size": 2, "sim.speed": 1.0})
    site = next(s for s in settings.sites if s.name == "sanjose-private")
    clock = SystemClock()
    engine = create_engine(database_url)
    await upgrade(engine)
    store = Store(sessions=session_factory(engine), clock=clock)
    conn = SimConnector.from_settings(site=site, settings=settings, clock=clock)
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
    yield Rig(store=store, loop=loop, metrics=metrics)
    await conn.close()
    await engine.dispose()


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
