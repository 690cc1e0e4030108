"""The store's guarantees: atomic placement, no double allocation, nothing half-written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.repository import InvalidCursor, Store, decode_cursor, encode_cursor
from broker.domain.clock import ManualClock
from broker.domain.enums import Health, JobKind, JobState, SiteKind, Tier
from broker.domain.errors import IdempotencyConflict, InvalidTransition, JobNotFound
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, JobSpec, Placement, Resources, Workload

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SITE = Site(
    name="s1",
    kind=SiteKind.SIM,
    region="r1",
    location="aws:us-east-1",
    grid_zone="US-MIDA-PJM",
    private=True,
)
POOL = GpuPool(
    id="s1/H100-0",
    site="s1",
    gpu_model="H100",
    gpu_memory_gb=80,
    gpus_per_node=8,
    nodes=1,
    price_on_demand=2.0,
)


def spec(gpus: int = 8, name: str = "j") -> JobSpec:
    return JobSpec(
        name=name,
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=gpus, gpu_models=("H100",)),
        workload=Workload(image="img"),
        estimated_duration_s=600,
    )


def placement(job: Job, gpus: int = 8) -> Placement:
    return Placement(
        job_id=job.id,
        site="s1",
        pool_id=POOL.id,
        gpu_milli=gpus * 1000,
        price_per_gpu_hour=2.0,
        spot=False,
        estimated_cost_usd=1.0,
        estimated_gco2=None,
        created_at=T0,
        node_indices=(0,),
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    engine = create_engine(database_url)
    await upgrade(engine)
    s = Store(sessions=session_factory(engine), clock=ManualClock(T0))
    await s.sync_site(SITE, [POOL])
    yield s
    await engine.dispose()


async def test_two_replicas_cannot_allocate_the_same_gpus(database_url: str, store: Store) -> None:
    # Two stores on two engines stand for two broker replicas sharing one database.
    other_engine = create_engine(database_url)
    other = Store(sessions=session_factory(other_engine), clock=ManualClock(T0))
    try:
        jobs = [(await store.create_job(tenant="t", spec=spec(name=f"j{i}")))[0] for i in range(6)]
        results = await asyncio.gather(
            *(
                (store if i % 2 else other).place(job=j, placement=placement(j), reason="placed")
                for i, j in enumerate(jobs)
            )
        )
        placed = [r is not None for r in results]
        assert sorted(placed) == [False] * 5 + [True]  # one 8-GPU block, one winner
        pool = (await store.pools())[0]
        assert pool.allocated_milli == 8000
        assert len(await store.active_placements()) == 1
        losers = [j for j, ok in zip(jobs, placed, strict=True) if not ok]
        for j in losers:  # no half-written state: still pending, no placement, one event
            detail = await store.get_job(j.id)
            assert detail.job.state is JobState.PENDING
            assert detail.placement is None
            assert [e.to_state for e in detail.events] == [JobState.PENDING]
    finally:
        await other_engine.dispose()


async def test_the_same_job_cannot_be_placed_twice(store: Store) -> None:
    job, _ = await store.create_job(tenant="t", spec=spec(gpus=1))
    results = await asyncio.gather(
        *(store.place(job=job, placement=placement(job, 1), reason="placed") for _ in range(4))
    )
    assert sum(r is not None for r in results) == 1
    assert (await store.pools())[0].allocated_milli == 1000


async def test_finish_releases_and_is_applied_once(store: Store) -> None:
    job, _ = await store.create_job(tenant="t", spec=spec())
    assert await store.place(job=job, placement=placement(job), reason="placed") == []
    assert await store.mark_running(job.id, at=T0)
    first = await store.finish(job.id, state=JobState.SUCCEEDED, reason="completed")
    again = await store.finish(job.id, state=JobState.FAILED, reason="late duplicate")
    assert first is not None and first.job.state is JobState.SUCCEEDED
    assert again is None
    assert (await store.pools())[0].allocated_milli == 0
    events = (await store.get_job(job.id)).events
    assert [e.to_state for e in events] == [
        JobState.PENDING,
        JobState.SCHEDULED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ]
    assert all(e.at.tzinfo is not None and e.at.utcoffset().total_seconds() == 0 for e in events)


async def test_illegal_transition_is_refused(store: Store) -> None:
    job, _ = await store.create_job(tenant="t", spec=spec())
    with pytest.raises(InvalidTransition):
        await store.finish(job.id, state=JobState.RUNNING, reason="no")
    assert (await store.get_job(job.id)).job.state is JobState.PENDING


async def test_idempotency_is_per_tenant_and_per_body(store: Store) -> None:
    a, created = await store.create_job(
        tenant="t", spec=spec(), idempotency_key="k", request_hash="h1"
    )
    b, created_again = await store.create_job(
        tenant="t", spec=spec(), idempotency_key="k", request_hash="h1"
    )
    assert created and not created_again and a.id == b.id
    with pytest.raises(IdempotencyConflict):
        await store.create_job(tenant="t", spec=spec(), idempotency_key="k", request_hash="h2")
    c, created_other = await store.create_job(
        tenant="u", spec=spec(), idempotency_key="k", request_hash="h2"
    )
    assert created_other and c.id != a.id


async def test_other_tenants_jobs_are_not_found(store: Store) -> None:
    job, _ = await store.create_job(tenant="t", spec=spec())
    with pytest.raises(JobNotFound):
        await store.get_job(job.id, tenant="u")
    assert (await store.get_job(job.id, tenant="t")).job.id == job.id


async def test_sync_keeps_the_ledger_and_health_is_recorded(store: Store) -> None:
    job, _ = await store.create_job(tenant="t", spec=spec(gpus=4))
    assert await store.place(job=job, placement=placement(job, 4), reason="placed") == []
    await store.sync_site(SITE, [POOL])  # an inventory refresh must not forget allocations
    assert (await store.pools())[0].allocated_milli == 4000
    await store.set_site_health("s1", Health.UNREACHABLE, "timeout")
    site = (await store.sites())[0]
    assert site.health is Health.UNREACHABLE and site.health_reason == "timeout"


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor(12345)) == 12345
    for bad in ("", "!!!", encode_cursor(1)[:-1] + "*", "czotMQ"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)
