"""The batch path keeps the single path's guarantees: skips what moved, writes the same rows.

Placements here name their nodes and GPUs as the engine would from one snapshot of the
ledger; each replica's choices are its own, so two replicas may name the same GPUs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

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

T = TypeVar("T")
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


CPU = 96_000  # the pool's milli-cores per node (its default 96 cores)
FIRST, LAST = (0, 1, 2, 3), (4, 5, 6, 7)  # the halves of a node's GPUs


def spec(gpus: int, name: str) -> JobSpec:
    return JobSpec(
        name=name,
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=gpus, gpu_models=("H100",)),
        workload=Workload(image="img"),
        estimated_duration_s=600,
    )


def on(
    job: Job,
    *nodes: int,
    gpus: Sequence[int] = FIRST,
    share: int | None = None,
    cpu: int = 1000,
    memory: int = 4096,
    site: str = "s1",
) -> Placement:
    """The job on `nodes` of the pool, taking `gpus` on each: whole GPUs, or `share`
    milli-GPUs of the one GPU named; `cpu` milli-cores and `memory` MiB on each node."""
    per_node = share if share is not None else 1000 * len(gpus)
    return Placement(
        job_id=job.id,
        site=site,
        pool_id=POOL.id,
        gpu_milli=per_node * len(nodes),
        price_per_gpu_hour=2.0,
        spot=False,
        estimated_cost_usd=1.5,
        estimated_gco2=12.0,
        created_at=T0,
        node_names=tuple(str(n) for n in nodes),
        node_gpus=(tuple(gpus),) * len(nodes),
        cpu_milli=cpu,
        memory_mb=memory,
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


Ledger = tuple[tuple[tuple[int, ...], int, int], ...]  # per node: GPUs, CPU, memory


def node(*gpus: int, cpu: int = 0, memory: int = 0) -> tuple[tuple[int, ...], int, int]:
    """A node's ledger: `gpus` milli-GPUs on its first GPUs, nothing on the others."""
    return (tuple(gpus) + (0,) * (POOL.gpus_per_node - len(gpus)), cpu, memory)


FULL = (1000,) * 8


async def ledger(store: Store) -> Ledger:
    """The store's ledger: each node's milli-GPUs per GPU, milli-cores and MiB in use."""
    (pool,) = await store.pools()
    return tuple((u.gpus, u.cpu_milli, u.memory_mb) for u in pool.uses())


async def active_by_node(store: Store) -> Ledger:
    """What the active placements hold on each node's GPUs: must equal the ledger."""
    gpus = [[0] * POOL.gpus_per_node for _ in range(POOL.nodes)]
    cpu, memory = [0] * POOL.nodes, [0] * POOL.nodes
    for _, p in await store.active_placements():
        for name, held in zip(p.node_names, p.node_gpus, strict=True):
            i = int(name)
            for g in held:
                gpus[i][g] += p.demand.per_gpu
            cpu[i] += p.cpu_milli
            memory[i] += p.memory_mb
    return tuple((tuple(gpus[i]), cpu[i], memory[i]) for i in range(POOL.nodes))


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
    cancelled, fits, lost_node, clash, fills, late = await jobs(store, 6)
    await store.cancel(cancelled.id, tenant=None, reason="cancelled_by_user")
    (rival,) = await jobs(store, 1, gpus=8)  # another replica takes node 1 meanwhile
    whole_node = on(rival, 1, gpus=FIRST + LAST)
    assert await store.place(job=rival, placement=whole_node, reason="placed") == []

    done = await store.place_many(
        [
            on(cancelled, 0),
            on(fits, 0),
            on(lost_node, 1),  # node 1 is full now
            on(clash, 0, gpus=(2, 3, 4, 5)),  # 4 GPUs are free, but not GPUs 2 and 3
            on(fills, 0, gpus=LAST),  # 4 + 4 = 8 on node 0
            on(late, 0, gpus=(0,)),  # node 0 was filled by the batch itself
            on(fits, 1),  # already placed, by this batch
        ],
        reason="placed",
    )

    assert done == [False, True, False, False, True, False, False]
    full = node(*FULL, cpu=2000, memory=8192)
    assert await ledger(store) == (full, node(*FULL, cpu=1000, memory=4096))
    assert await ledger(store) == await active_by_node(store)
    for job, gpus in ((fits, FIRST), (fills, LAST)):
        detail = await store.get_job(job.id)
        assert detail.job.state is JobState.SCHEDULED
        assert detail.placement is not None
        assert (detail.placement.node_names, detail.placement.node_gpus) == (("0",), (gpus,))
    for job in (lost_node, clash, late):
        await untouched(store, job)
    assert (await store.get_job(cancelled.id)).job.state is JobState.CANCELLED
    assert (await store.get_job(cancelled.id)).placement is None


async def test_a_gang_placement_takes_every_node_or_none(store: Store) -> None:
    small, gang, other_gang = await jobs(store, 3)
    done = await store.place_many(
        [
            on(small, 1, gpus=range(6)),
            on(gang, 0, 1, gpus=LAST),
            on(other_gang, 0, 1, gpus=(6, 7)),
        ],
        reason="placed",
    )
    # the 8-GPU gang needs GPUs 4-7 on node 1, where only 6 and 7 are free; the 4-GPU
    # gang takes those two: node 0 keeps nothing of the gang that failed
    assert done == [True, False, True]
    assert await ledger(store) == (
        node(0, 0, 0, 0, 0, 0, 1000, 1000, cpu=1000, memory=4096),
        node(*FULL, cpu=2000, memory=8192),
    )
    assert await ledger(store) == await active_by_node(store)
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
    expected["node_names"] = ["1"]
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
    assert await ledger(store) == (node(), node())
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


@pytest.fixture
async def other(database_url: str, store: Store) -> AsyncIterator[Store]:
    """A second broker replica: its own store on its own engine, on the same database."""
    other_engine = create_engine(database_url)
    yield Store(sessions=session_factory(other_engine), clock=ManualClock(T0))
    await other_engine.dispose()


async def race(engine: AsyncEngine, *calls: Awaitable[T]) -> list[T]:
    """Run `calls` (each a transaction that locks the pool's ledger) at once.

    On PostgreSQL a third transaction holds the pool's ledger rows until every call is in
    flight, waiting on them or on the jobs another call has locked; then it lets go. On
    SQLite, BEGIN IMMEDIATE runs them one after the other.
    """
    if engine.dialect.name != "postgresql":
        return list(await asyncio.gather(*calls))
    async with engine.connect() as conn:
        blocker = await conn.begin()
        await conn.execute(
            text("SELECT node FROM ledger_nodes WHERE pool_id = :p FOR UPDATE"), {"p": POOL.id}
        )
        running = asyncio.gather(*calls)
        try:
            await _until_waiting(conn, len(calls))
        finally:
            await blocker.rollback()
            done = list(await running)
    return done


async def test_two_replicas_racing_batches_never_overdraw(
    engine: AsyncEngine, store: Store, other: Store
) -> None:
    # Two stores on two engines stand for two broker replicas; each decided, from the same
    # empty ledger, to put 4 GPUs of 8 jobs (half of them the same jobs) on alternate nodes,
    # the first two on each node's first and last four GPUs, the rest after them.
    queue = await jobs(store, 12)

    def decided(order: Sequence[Job], first: int) -> list[Placement]:
        halves = (FIRST, LAST)
        return [on(j, (i + first) % 2, gpus=halves[i // 2 % 2]) for i, j in enumerate(order)]

    mine = decided(queue[:8], 0)
    theirs = decided(list(reversed(queue[4:])), 1)
    mine_done, theirs_done = await race(
        engine, store.place_many(mine, reason="placed"), other.place_many(theirs, reason="placed")
    )
    committed = [p.job_id for p, ok in zip(mine, mine_done, strict=True) if ok] + [
        p.job_id for p, ok in zip(theirs, theirs_done, strict=True) if ok
    ]
    assert len(committed) == len(set(committed)) == 4  # 16 GPUs, 4 each: all taken once
    full = node(*FULL, cpu=2000, memory=8192)
    assert await ledger(store) == (full, full) == await active_by_node(store)
    active = [p.job_id for _, p in await store.active_placements()]
    assert sorted(active) == sorted(committed)
    for job in queue:
        detail = await store.get_job(job.id)
        events = [e.to_state for e in detail.events]
        if job.id in committed:
            assert events == [JobState.PENDING, JobState.SCHEDULED]
        else:
            await untouched(store, job)


async def commit(store: Store, job: Job, placement: Placement, *, path: str) -> bool:
    """Commit one placement one by one (`place`) or as a batch of one (`place_many`)."""
    if path == "place":
        return await store.place(job=job, placement=placement, reason="placed") is not None
    (done,) = await store.place_many([placement], reason="placed")
    return done


def last_of_a_node(what: str, first: Job, second: Job) -> tuple[Placement, Placement]:
    """Two placements on node 0 that each fit alone and not together, as two replicas
    would decide them from the same ledger."""
    if what == "gpu share":  # 0.6 of GPU 0 each: 1.2 GPUs on one
        return on(first, 0, gpus=(0,), share=600), on(second, 0, gpus=(0,), share=600)
    if what == "cpu":  # a GPU each, and 60 of the node's 96 cores each
        return on(first, 0, gpus=(0,), cpu=60_000), on(second, 0, gpus=(1,), cpu=60_000)
    assert what == "memory"  # a GPU each, and 600 of the node's 1024 GiB each
    big = 600 * 1024
    return on(first, 0, gpus=(0,), memory=big), on(second, 0, gpus=(1,), memory=big)


@pytest.mark.parametrize(
    "paths", [("place", "place"), ("place_many", "place_many"), ("place", "place_many")]
)
@pytest.mark.parametrize("what", ["gpu share", "cpu", "memory"])
async def test_two_replicas_never_overdraw_a_gpu_share_or_a_nodes_cpu_or_memory(
    engine: AsyncEngine, store: Store, other: Store, what: str, paths: tuple[str, str]
) -> None:
    first, second = await jobs(store, 2, gpus=1)
    mine, theirs = last_of_a_node(what, first, second)
    done = await race(
        engine,
        commit(store, first, mine, path=paths[0]),
        commit(other, second, theirs, path=paths[1]),
    )

    assert sorted(done) == [False, True]  # exactly one of them commits
    (winner,) = [p for p, ok in zip((mine, theirs), done, strict=True) if ok]
    (loser,) = [j for j, ok in zip((first, second), done, strict=True) if not ok]
    gpus, cpu, memory = (await ledger(store))[0]
    assert (cpu, memory) == (winner.cpu_milli, winner.memory_mb) and sum(gpus) == winner.gpu_milli
    assert max(gpus) <= 1000 and cpu <= CPU and memory <= 1024 * 1024
    assert await ledger(store) == await active_by_node(store)
    assert [p.job_id for _, p in await store.active_placements()] == [winner.job_id]
    await untouched(store, loser)


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
