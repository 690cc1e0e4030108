"""The store's guarantees: atomic placement, no double allocation, nothing half-written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.models import GpuRow, NodeRow
from broker.db.repository import InvalidCursor, Store, decode_cursor, encode_cursor
from broker.domain.clock import ManualClock
from broker.domain.enums import Health, JobKind, JobState, SiteKind, Tier
from broker.domain.errors import IdempotencyConflict, JobNotFound
from broker.domain.fleet import GpuPool, NodeUse, Site
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


# a Kubernetes-like pool: named nodes of 4 GPUs, 32 cores and 256 GiB each
SHARED = GpuPool(
    id="s1/A100-4x",
    site="s1",
    gpu_model="A100",
    gpu_memory_gb=80,
    gpus_per_node=4,
    nodes=2,
    price_on_demand=3.0,
    cpu_per_node=32.0,
    memory_gb_per_node=256.0,
    node_names=("gpu-a", "gpu-b"),
)


def spec(gpus: int = 8, name: str = "j", *, cpu: float = 1.0, memory_gb: float = 4.0) -> JobSpec:
    return JobSpec(
        name=name,
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=gpus, gpu_models=("H100",), cpu=cpu, memory_gb=memory_gb),
        workload=Workload(image="img"),
        estimated_duration_s=600,
    )


def placement(
    job: Job, gpus: int = 8, *, pool: GpuPool = POOL, nodes: tuple[str, ...] = ("0",)
) -> Placement:
    """The job on GPUs 0 .. gpus-1 of each of `nodes`, with the CPU and memory it asks."""
    demand = job.spec.resources.demand
    return Placement(
        job_id=job.id,
        site="s1",
        pool_id=pool.id,
        gpu_milli=gpus * 1000 * len(nodes),
        price_per_gpu_hour=2.0,
        spot=False,
        estimated_cost_usd=1.0,
        estimated_gco2=None,
        created_at=T0,
        node_names=nodes,
        node_gpus=(tuple(range(gpus)),) * len(nodes),
        cpu_milli=demand.cpu_milli,
        memory_mb=demand.memory_mb,
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


Booked = dict[str, tuple[tuple[int, ...], int, int]]


async def bookings(engine: AsyncEngine, pool: GpuPool = SHARED) -> tuple[Booked, Booked]:
    """The pool's ledger rows by node name: (milli-GPUs per GPU, milli-cores, MiB) booked
    by the broker, and the same held by others' pods."""
    async with session_factory(engine)() as s:
        gpus = list(await s.scalars(select(GpuRow).where(GpuRow.pool_id == pool.id)))
        nodes = list(await s.scalars(select(NodeRow).where(NodeRow.pool_id == pool.id)))

    def per_gpu(node: str, foreign: bool) -> tuple[int, ...]:
        rows = sorted((r for r in gpus if r.node == node), key=lambda r: r.gpu)
        return tuple(r.foreign_milli if foreign else r.allocated_milli for r in rows)

    booked = {n.node: (per_gpu(n.node, False), n.cpu_milli, n.memory_mb) for n in nodes}
    held = {
        n.node: (per_gpu(n.node, True), n.foreign_cpu_milli, n.foreign_memory_mb) for n in nodes
    }
    return booked, held


async def shown(store: Store, pool: GpuPool = SHARED) -> Booked:
    """What `pools()` shows of the pool's nodes: booked and others' use together."""
    (got,) = [p for p in await store.pools() if p.id == pool.id]
    named = zip(got.names(), got.uses(), strict=True)
    return {n: (u.gpus, u.cpu_milli, u.memory_mb) for n, u in named}


def others(pool: GpuPool, **use: NodeUse) -> GpuPool:
    """The pool as its connector reports it, with others' pods holding `use` by node."""
    return replace(pool, node_use=tuple(use.get(n) or NodeUse.empty(4) for n in pool.names()))


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


async def test_an_update_the_state_cannot_take_is_dropped(store: Store) -> None:
    """A site's late word about a run the broker already stopped (the job went back to the
    queue) changes nothing and raises nothing: it is a stale update, not a bug."""
    job, _ = await store.create_job(tenant="t", spec=spec())
    assert await store.finish(job.id, state=JobState.RUNNING, reason="no") is None
    assert await store.finish(job.id, state=JobState.SUCCEEDED, reason="completed") is None
    detail = await store.get_job(job.id)
    assert detail.job.state is JobState.PENDING
    assert [e.to_state for e in detail.events] == [JobState.PENDING]


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


async def test_sync_records_others_use_beside_the_bookings(
    engine: AsyncEngine, store: Store
) -> None:
    await store.sync_site(SITE, [POOL, SHARED])
    job, _ = await store.create_job(tenant="t", spec=spec(2, cpu=4, memory_gb=16))
    on_a = placement(job, 2, pool=SHARED, nodes=("gpu-a",))
    assert await store.place(job=job, placement=on_a, reason="placed") == []
    mine = {"gpu-a": ((1000, 1000, 0, 0), 4000, 16384), "gpu-b": ((0, 0, 0, 0), 0, 0)}

    # others' pods hold half a GPU and 20 cores on gpu-a, a whole GPU on gpu-b
    seen = others(
        SHARED,
        **{
            "gpu-a": NodeUse((0, 0, 500, 0), 20_000, 8192),
            "gpu-b": NodeUse((1000, 0, 0, 0), 1000, 1024),
        },
    )
    await store.sync_site(SITE, [POOL, seen])
    assert await bookings(engine) == (
        mine,
        {"gpu-a": ((0, 0, 500, 0), 20_000, 8192), "gpu-b": ((1000, 0, 0, 0), 1000, 1024)},
    )
    assert await shown(store) == {
        "gpu-a": ((1000, 1000, 500, 0), 24_000, 24_576),
        "gpu-b": ((1000, 0, 0, 0), 1000, 1024),
    }

    # what others hold counts against new placements: GPU 2's other half is free, but not
    # a whole GPU 2, nor 10 more cores (4 + 20 + 10 > 32) on gpu-a
    refused = [
        replace(on_a, node_gpus=((2,),), gpu_milli=1000),
        replace(on_a, node_gpus=((3,),), gpu_milli=1000, cpu_milli=10_000),
        replace(on_a, node_names=("gpu-b",), node_gpus=((0,),), gpu_milli=1000),
    ]
    fits = replace(on_a, node_gpus=((2,),), gpu_milli=500, cpu_milli=8000)
    for p, ok in [(r, False) for r in refused] + [(fits, True)]:
        other, _ = await store.create_job(tenant="t", spec=spec(1, "other"))
        placed = await store.place(job=other, placement=replace(p, job_id=other.id), reason="x")
        assert (placed is not None) is ok, p

    # others' pods go: the bookings are what is left
    await store.sync_site(SITE, [POOL, SHARED])
    assert await shown(store) == {
        "gpu-a": ((1000, 1000, 500, 0), 4000 + 8000, 16384 + 16384),
        "gpu-b": ((0, 0, 0, 0), 0, 0),
    }


async def test_others_use_is_laid_beside_the_bookings(engine: AsyncEngine, store: Store) -> None:
    """The connector knows nothing of the broker's pods and numbers others' GPUs from 0;
    the ledger moves them onto GPUs the bookings leave free, so that no GPU shows both
    and the free ones are free."""
    await store.sync_site(SITE, [POOL, SHARED])
    job, _ = await store.create_job(tenant="t", spec=spec(2))
    on_a = placement(job, 2, pool=SHARED, nodes=("gpu-a",))
    assert await store.place(job=job, placement=on_a, reason="placed") == []

    # one whole GPU and a 0.3 share of another, on GPUs 0 and 1 as the connector counts
    await store.sync_site(SITE, [POOL, others(SHARED, **{"gpu-a": NodeUse((1000, 300, 0, 0))})])
    assert (await shown(store))["gpu-a"] == ((1000, 1000, 1000, 300), 1000, 4096)
    (pool,) = [p for p in await store.pools() if p.id == SHARED.id]
    assert pool.uses()[0].free_whole == 0  # 2 booked + 1 held + a share: no whole GPU left

    other, _ = await store.create_job(tenant="t", spec=spec(1, "other"))
    whole = replace(on_a, job_id=other.id, gpu_milli=1000, node_gpus=((3,),))
    assert await store.place(job=other, placement=whole, reason="placed") is None
    share = replace(whole, gpu_milli=700)
    assert await store.place(job=other, placement=share, reason="placed") == []
    assert (await shown(store))["gpu-a"] == ((1000, 1000, 1000, 1000), 2000, 8192)


async def test_a_node_that_leaves_keeps_its_bookings_until_released(
    engine: AsyncEngine, store: Store
) -> None:
    await store.sync_site(SITE, [POOL, SHARED])
    leaving, staying = [
        (await store.create_job(tenant="t", spec=spec(2, name)))[0] for name in ("l", "s")
    ]
    for job, node in ((leaving, "gpu-a"), (staying, "gpu-b")):
        on = placement(job, 2, pool=SHARED, nodes=(node,))
        assert await store.place(job=job, placement=on, reason="placed") == []
        assert await store.mark_running(job.id, at=T0)

    gone = replace(SHARED, nodes=1, node_names=("gpu-b",))  # gpu-a was drained and removed
    await store.sync_site(SITE, [POOL, gone])
    two = ((1000, 1000, 0, 0), 1000, 4096)
    assert await shown(store) == {"gpu-b": two}  # position 0 is gpu-b now
    assert (await bookings(engine))[0] == {"gpu-a": two, "gpu-b": two}
    positions = {w.job_id: w.node_indices for w in await store.running_work()}
    assert positions == {leaving.id: (-1,), staying.id: (0,)}

    # nothing new goes to a node the pool no longer offers, though its ledger has room
    late, _ = await store.create_job(tenant="t", spec=spec(1, "late"))
    on_gone = placement(late, 1, pool=SHARED, nodes=("gpu-a",))
    on_gone = replace(on_gone, node_gpus=((3,),))
    assert await store.place(job=late, placement=on_gone, reason="placed") is None
    assert await store.place_many([on_gone], reason="placed") == [False]

    released = await store.finish(leaving.id, state=JobState.SUCCEEDED, reason="completed")
    assert released is not None and released.placement is not None
    assert (await bookings(engine))[0] == {"gpu-a": ((0, 0, 0, 0), 0, 0), "gpu-b": two}

    await store.sync_site(SITE, [POOL, SHARED])  # it comes back, empty
    assert await shown(store) == {"gpu-a": ((0, 0, 0, 0), 0, 0), "gpu-b": two}
    positions = {w.job_id: w.node_indices for w in await store.running_work()}
    assert positions == {staying.id: (1,)}


async def test_requeue_puts_a_stopped_job_back_and_frees_its_gpus(store: Store) -> None:
    job, _ = await store.create_job(tenant="t", spec=spec(4))
    assert await store.place(job=job, placement=placement(job, 4), reason="placed") == []
    assert await store.mark_running(job.id, at=T0)
    at = T0 + timedelta(minutes=5)

    released = await store.requeue(job.id, reason="node gpu-a went away", at=at)

    assert released is not None and released.job.state is JobState.PENDING
    assert released.placement is not None
    assert released.placement.node_names == ("0",)
    assert released.placement.node_gpus == ((0, 1, 2, 3),)
    assert released.placement.ended_at == at
    detail = await store.get_job(job.id)
    assert detail.job.state is JobState.PENDING
    assert [(e.to_state, e.reason, e.detail) for e in detail.events][-2:] == [
        (JobState.PREEMPTED, "preempted", "node gpu-a went away"),
        (JobState.PENDING, "requeued", "back in the queue after preemption"),
    ]
    (pool,) = await store.pools()
    assert pool.uses()[0].gpus == (0,) * 8 and pool.uses()[0].cpu_milli == 0
    assert await store.active_placements() == []
    assert await store.running_work() == []

    # a job neither scheduled nor running is left alone; a requeued one can be placed again
    assert await store.requeue(job.id, reason="again", at=at) is None
    assert await store.place(job=job, placement=placement(job, 8), reason="placed") == []
    assert (await store.pools())[0].allocated_milli == 8000


async def _until_waiting(engine: AsyncEngine, n: int) -> None:
    """Wait until `n` sessions of this database wait for a lock (PostgreSQL)."""
    async with engine.connect() as conn:
        for _ in range(500):
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


async def test_an_inventory_refresh_and_a_placement_queue_rather_than_deadlock(
    database_url: str, engine: AsyncEngine, store: Store
) -> None:
    # A placement holds gpu-a's row and waits for gpu-b's; meanwhile a refresh (another
    # replica) changes what others hold on both. Were the refresh to write gpu-a's GPU rows
    # before it took gpu-b's node row, each would wait for the other.
    await store.sync_site(SITE, [POOL, SHARED])
    gang, _ = await store.create_job(tenant="t", spec=spec(1))
    both = placement(gang, 1, pool=SHARED, nodes=("gpu-a", "gpu-b"))
    seen = others(
        SHARED,
        **{"gpu-a": NodeUse((1000, 0, 0, 0)), "gpu-b": NodeUse((0, 0, 0, 0), 2000, 0)},
    )
    other_engine = create_engine(database_url)
    other = Store(sessions=session_factory(other_engine), clock=ManualClock(T0))
    try:
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                blocker = await conn.begin()
                await conn.execute(
                    text(
                        "SELECT node FROM ledger_nodes WHERE pool_id = :p AND node = 'gpu-b' "
                        "FOR UPDATE"
                    ),
                    {"p": SHARED.id},
                )
                placing = asyncio.create_task(store.place_many([both], reason="placed"))
                refreshing: asyncio.Future[None] | None = None
                try:
                    await _until_waiting(engine, 1)
                    refreshing = asyncio.ensure_future(other.sync_site(SITE, [POOL, seen]))
                    await _until_waiting(engine, 2)
                finally:
                    await blocker.rollback()
                    done = await placing
                    if refreshing is not None:
                        await refreshing
        else:  # BEGIN IMMEDIATE: one after the other anyway
            done = await store.place_many([both], reason="placed")
            await other.sync_site(SITE, [POOL, seen])
    finally:
        await other_engine.dispose()

    # the placement went first: others' whole GPU moved off the GPU it booked
    assert done == [True]
    assert await shown(store) == {
        "gpu-a": ((1000, 1000, 0, 0), 1000, 4096),
        "gpu-b": ((1000, 0, 0, 0), 3000, 4096),
    }


async def test_an_update_about_an_earlier_run_is_never_applied_to_a_later_one(
    store: Store,
) -> None:
    """Run 1 is preempted and the job placed again as run 2; the site's late words about run
    1 (it started, it finished, its node went away) change nothing; run 2's are applied."""
    job, _ = await store.create_job(tenant="t", spec=spec(4))
    first = replace(placement(job, 4), run="run-1")
    assert await store.place(job=job, placement=first, reason="placed") == []
    assert await store.requeue(job.id, reason="preempted", at=T0, run="run-1") is not None
    second = replace(placement(job, 4), run="run-2")
    assert await store.place(job=job, placement=second, reason="placed") == []

    assert not await store.mark_running(job.id, at=T0, run="run-1")
    assert await store.requeue(job.id, reason="node_gone: 0", at=T0, run="run-1") is None
    done = JobState.SUCCEEDED
    assert await store.finish(job.id, state=done, reason="completed", run="run-1") is None
    detail = await store.get_job(job.id)
    assert detail.job.state is JobState.SCHEDULED
    assert detail.placement is not None and detail.placement.run == "run-2"

    assert await store.mark_running(job.id, at=T0, run="run-2")
    released = await store.finish(job.id, state=done, reason="completed", run="run-2")
    assert released is not None and released.job.state is JobState.SUCCEEDED
    assert (await store.pools())[0].allocated_milli == 0
