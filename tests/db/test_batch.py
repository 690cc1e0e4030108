"""The batch path keeps the single path's guarantees: skips what moved, writes the same rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.models import JobRow, PlacementRow
from broker.db.repository import Deferral, Store
from broker.domain.clock import ManualClock
from broker.domain.enums import JobKind, JobState, SiteKind, Tier
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
    nodes=2,
    price_on_demand=2.0,
)


def spec(gpus: int, name: str) -> JobSpec:
    return JobSpec(
        name=name,
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=gpus, gpu_models=("H100",)),
        workload=Workload(image="img"),
        estimated_duration_s=600,
    )


def on(job: Job, *nodes: int, gpus: int = 4, site: str = "s1") -> Placement:
    """The job on `nodes` of the pool, `gpus` in all."""
    return Placement(
        job_id=job.id,
        site=site,
        pool_id=POOL.id,
        gpu_milli=gpus * 1000,
        price_per_gpu_hour=2.0,
        spot=False,
        estimated_cost_usd=1.5,
        estimated_gco2=12.0,
        created_at=T0,
        node_indices=nodes,
        borrowed=True,
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> Store:
    s = Store(sessions=session_factory(engine), clock=ManualClock(T0))
    await s.sync_site(SITE, [POOL])
    return s


async def jobs(store: Store, n: int, *, gpus: int = 4) -> list[Job]:
    return [(await store.create_job(tenant="t", spec=spec(gpus, f"j{i}")))[0] for i in range(n)]


async def ledger(store: Store) -> tuple[int, ...]:
    (pool,) = await store.pools()
    return pool.node_used()


async def active_by_node(store: Store) -> tuple[int, ...]:
    """What the active placements hold on each node: must equal the ledger."""
    used = [0] * POOL.nodes
    for _, p in await store.active_placements():
        for idx in p.node_indices:
            used[idx] += p.milli_per_node
    return tuple(used)


async def untouched(store: Store, job: Job) -> None:
    detail = await store.get_job(job.id)
    assert detail.job.state is JobState.PENDING
    assert detail.placement is None
    assert [(e.to_state, e.reason) for e in detail.events] == [(JobState.PENDING, "submitted")]


async def placement_columns(engine: AsyncEngine, job_id: str) -> dict[str, Any]:
    async with session_factory(engine)() as s:
        row = await s.scalar(select(PlacementRow).where(PlacementRow.job_id == job_id))
        assert row is not None
        return {
            c.key: getattr(row, c.key)
            for c in PlacementRow.__table__.columns
            if c.key not in ("id", "job_id")
        }


async def test_a_batch_commits_what_still_holds_and_skips_the_rest(store: Store) -> None:
    cancelled, fits, lost_node, fills, late = await jobs(store, 5)
    await store.cancel(cancelled.id, tenant=None, reason="cancelled_by_user")
    (rival,) = await jobs(store, 1, gpus=8)  # another replica takes node 1 meanwhile
    assert await store.place(job=rival, placement=on(rival, 1, gpus=8), reason="placed") == []

    done = await store.place_many(
        [
            on(cancelled, 0),
            on(fits, 0),
            on(lost_node, 1),  # node 1 is full now
            on(fills, 0),  # 4 + 4 = 8 on node 0
            on(late, 0, gpus=1),  # node 0 was filled by the batch itself
            on(fits, 1),  # already placed, by this batch
        ],
        reason="placed",
    )

    assert done == [False, True, False, True, False, False]
    assert await ledger(store) == (8000, 8000) == await active_by_node(store)
    for job in (fits, fills):
        detail = await store.get_job(job.id)
        assert detail.job.state is JobState.SCHEDULED
        assert detail.placement is not None and detail.placement.node_indices == (0,)
    for job in (lost_node, late):
        await untouched(store, job)
    assert (await store.get_job(cancelled.id)).job.state is JobState.CANCELLED
    assert (await store.get_job(cancelled.id)).placement is None


async def test_a_gang_placement_takes_every_node_or_none(store: Store) -> None:
    small, gang, other_gang = await jobs(store, 3)
    done = await store.place_many(
        [on(small, 1, gpus=6), on(gang, 0, 1, gpus=8), on(other_gang, 0, 1, gpus=4)],
        reason="placed",
    )
    # the 8-GPU gang needs 4 on node 1, which has only 2 left; the 4-GPU gang needs 2
    assert done == [True, False, True]
    assert await ledger(store) == (2000, 8000) == await active_by_node(store)
    await untouched(store, gang)


async def test_the_batch_writes_what_place_writes(engine: AsyncEngine, store: Store) -> None:
    single, batched = await jobs(store, 2)
    assert await store.place(job=single, placement=on(single, 0), reason="placed") == []
    assert await store.place_many([on(batched, 1)], reason="placed") == [True]

    one, other = await store.get_job(single.id), await store.get_job(batched.id)
    assert (other.job.state, other.job.state_reason, other.job.version) == (
        one.job.state,
        one.job.state_reason,
        one.job.version,
    )
    assert other.job.updated_at == one.job.updated_at == T0
    assert [(e.from_state, e.to_state, e.reason, e.detail, e.at) for e in other.events] == [
        (e.from_state, e.to_state, e.reason, e.detail, e.at) for e in one.events
    ]
    expected = await placement_columns(engine, single.id)
    expected["node_indices"] = [1]
    assert await placement_columns(engine, batched.id) == expected


async def test_deferrals_move_only_pending_jobs_as_defer_does(
    engine: AsyncEngine, store: Store
) -> None:
    single, batched, cancelled, placed = await jobs(store, 4)
    until = T0 + timedelta(hours=3)
    await store.cancel(cancelled.id, tenant=None, reason="cancelled_by_user")
    assert await store.place(job=placed, placement=on(placed, 0), reason="placed") == []
    assert await store.defer(single.id, until=until, reason="cleaner at 15:00")

    done = await store.defer_many(
        [
            Deferral(job_id=cancelled.id, until=until, reason="x"),
            Deferral(job_id=batched.id, until=until, reason="cleaner at 15:00"),
            Deferral(job_id=placed.id, until=until, reason="x"),
            Deferral(job_id=single.id, until=until, reason="x"),  # deferred already
            Deferral(job_id="job-unknown", until=until, reason="x"),
        ]
    )

    assert done == [False, True, False, False, False]
    one, other = await store.get_job(single.id), await store.get_job(batched.id)
    assert other.job.state is JobState.DEFERRED
    assert (other.job.state_reason, other.job.version) == (one.job.state_reason, one.job.version)
    assert [(e.from_state, e.to_state, e.reason, e.detail) for e in other.events] == [
        (e.from_state, e.to_state, e.reason, e.detail) for e in one.events
    ]
    async with session_factory(engine)() as s:
        rows = await s.execute(select(JobRow.id, JobRow.not_before))
        not_before = {job_id: at for job_id, at in rows}
    assert not_before[batched.id] == not_before[single.id] == until
    assert not_before[placed.id] is None
    assert (await store.get_job(placed.id)).job.state is JobState.SCHEDULED
    assert len((await store.get_job(cancelled.id)).events) == 2


async def test_a_failing_batch_writes_nothing(store: Store) -> None:
    good, bad = await jobs(store, 2)
    with pytest.raises(IntegrityError):  # the placements row's site does not exist
        await store.place_many([on(good, 0), on(bad, 1, site="nowhere")], reason="placed")
    for job in (good, bad):
        await untouched(store, job)
    assert await ledger(store) == (0, 0)
    assert await store.active_placements() == []


async def _until_waiting(conn: AsyncConnection, n: int) -> None:
    """Wait until `n` other sessions of this database wait for a lock (PostgreSQL)."""
    for _ in range(500):
        # the statistics views are a snapshot per transaction unless cleared
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        if waiting is not None and waiting >= n:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"fewer than {n} sessions ever waited for a lock")


async def test_two_replicas_racing_batches_never_overdraw(
    database_url: str, engine: AsyncEngine, store: Store
) -> None:
    # Two stores on two engines stand for two broker replicas; each decided, from the same
    # empty ledger, to put 4 GPUs of 8 jobs (half of them the same jobs) on alternate nodes.
    other_engine = create_engine(database_url)
    other = Store(sessions=session_factory(other_engine), clock=ManualClock(T0))
    try:
        queue = await jobs(store, 12)
        mine = [on(j, i % 2) for i, j in enumerate(queue[:8])]
        theirs = [on(j, (i + 1) % 2) for i, j in enumerate(reversed(queue[4:]))]
        if engine.dialect.name == "postgresql":
            # A third transaction holds the ledger rows until both batches are in flight,
            # waiting on them or on the jobs the other batch has locked; then it lets go.
            async with engine.connect() as conn:
                blocker = await conn.begin()
                await conn.execute(
                    text("SELECT idx FROM pool_nodes WHERE pool_id = :p FOR UPDATE"),
                    {"p": POOL.id},
                )
                race = asyncio.gather(
                    store.place_many(mine, reason="placed"),
                    other.place_many(theirs, reason="placed"),
                )
                try:
                    await _until_waiting(conn, 2)
                finally:
                    await blocker.rollback()
                    mine_done, theirs_done = await race
        else:  # BEGIN IMMEDIATE: one batch after the other
            mine_done, theirs_done = await asyncio.gather(
                store.place_many(mine, reason="placed"),
                other.place_many(theirs, reason="placed"),
            )
        committed = [p.job_id for p, ok in zip(mine, mine_done, strict=True) if ok] + [
            p.job_id for p, ok in zip(theirs, theirs_done, strict=True) if ok
        ]
        assert len(committed) == len(set(committed)) == 4  # 16 GPUs, 4 each: all taken once
        assert await ledger(store) == (8000, 8000) == await active_by_node(store)
        active = [p.job_id for _, p in await store.active_placements()]
        assert sorted(active) == sorted(committed)
        for job in queue:
            detail = await store.get_job(job.id)
            events = [e.to_state for e in detail.events]
            if job.id in committed:
                assert events == [JobState.PENDING, JobState.SCHEDULED]
            else:
                await untouched(store, job)
    finally:
        await other_engine.dispose()


async def test_external_ids_are_written_for_active_placements_only(store: Store) -> None:
    running, finished, pending = await jobs(store, 3)
    assert await store.place_many([on(running, 0), on(finished, 1)], reason="placed") == [
        True,
        True,
    ]
    await store.finish(finished.id, state=JobState.PENDING, reason="dispatch_failed")
    await store.set_external_ids({running.id: "ext-1", finished.id: "ext-2", pending.id: "ext-3"})
    got = {j.id: (await store.get_job(j.id)).placement for j in (running, finished, pending)}
    assert got[running.id] is not None and got[running.id].external_id == "ext-1"
    assert got[finished.id] is not None and got[finished.id].external_id is None
    assert got[pending.id] is None
