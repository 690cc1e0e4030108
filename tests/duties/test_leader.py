"""Leadership across replicas: one runs the jobs, another takes over when it dies or leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.connection import create_engine, session_factory
from broker.db.leases import Leases
from broker.db.models import apscheduler_jobs
from broker.domain.clock import ManualClock, SystemClock
from broker.duties.leader import LEASE_NAME, Leader
from broker.duties.runs import Outcome
from broker.duties.settings import ScheduleSettings
from tests.duties.conftest import DUTIES, FAST, RecordingDuties, eventually

Replica = tuple[Leader, RecordingDuties]


def leads(leader: Leader) -> Callable[[], bool]:
    return lambda: leader.is_leader


@pytest.fixture
async def replicas(
    engine: AsyncEngine,
) -> AsyncIterator[Callable[..., Replica]]:
    """Make replicas, each with its own engines as a separate process would have."""
    made: list[tuple[Leader, AsyncEngine]] = []

    def make(
        name: str, *, settings: ScheduleSettings = FAST, duties: RecordingDuties | None = None
    ) -> Replica:
        own = create_engine(engine.url.render_as_string(hide_password=False))
        duties = duties or RecordingDuties()
        leader = Leader(
            engine=own, duties=duties, settings=settings, clock=SystemClock(), holder=name
        )
        made.append((leader, own))
        return leader, duties

    yield make
    for leader, own in made:
        await leader.stop()
        await own.dispose()


async def test_exactly_one_replica_runs_the_jobs(
    replicas: Callable[..., Replica], engine: AsyncEngine
) -> None:
    a, a_duties = replicas("a")
    b, b_duties = replicas("b")
    await a.start()
    await eventually(lambda: a.is_leader, within_s=2, what="a leads")
    await b.start()

    await eventually(
        lambda: all(a_duties.calls[d] >= 2 for d in DUTIES), within_s=3, what="a's jobs ran"
    )

    assert not b.is_leader
    assert sum(b_duties.calls.values()) == 0
    status = b.status()
    assert (status.replica, status.holder, status.is_leader) == ("b", "a", False)
    mine = a.status()
    assert mine.is_leader
    assert mine.holder == "a"
    assert mine.since is not None
    assert mine.expires_at is not None
    assert mine.since < mine.expires_at
    assert a.last_runs()["plan_capacity"].outcome in (Outcome.OK, Outcome.RUNNING)
    assert a.last_runs()["plan_capacity"].next_run_at is not None
    async with engine.connect() as conn:
        ids = set((await conn.execute(select(apscheduler_jobs.c.id))).scalars())
    assert ids == set(DUTIES)


async def test_a_dead_leaders_lease_is_taken_over_once_it_expires(
    replicas: Callable[..., Replica], engine: AsyncEngine
) -> None:
    a, a_duties = replicas("a")
    b, b_duties = replicas("b")
    await a.start()
    await eventually(lambda: a.is_leader, within_s=2, what="a leads")
    await b.start()
    await eventually(lambda: sum(a_duties.calls.values()) > 0, within_s=2, what="a works")

    await a.stop(release=False)  # a crash: the lease stays until it expires
    calls_at_death = sum(a_duties.calls.values())
    a_expiry = a.status().expires_at
    # ttl 1 s plus one follower poll, with room for a loaded machine
    await eventually(lambda: b.is_leader, within_s=3, what="b takes over")
    await eventually(lambda: all(b_duties.calls[d] >= 1 for d in DUTIES), within_s=2, what="b")

    b_since = b.status().since
    assert a_expiry is not None
    assert b_since is not None
    assert b_since > a_expiry  # b waited for a's lease to lapse
    assert sum(a_duties.calls.values()) == calls_at_death
    assert b.status().holder == "b"
    async with engine.connect() as conn:  # the failover rewrote the rows, not added more
        assert await conn.scalar(select(func.count()).select_from(apscheduler_jobs)) == 5


# A long ttl, so that what happens within one renewal period cannot be the lease lapsing.
LONG_TTL = FAST.model_copy(update={"lease_ttl_s": 5.0})


async def test_a_leader_that_stops_cleanly_hands_over_at_once(
    replicas: Callable[..., Replica],
) -> None:
    a, _ = replicas("a", settings=LONG_TTL)
    b, _ = replicas("b", settings=LONG_TTL)
    await a.start()
    await eventually(lambda: a.is_leader, within_s=2, what="a leads")
    await b.start()
    await asyncio.sleep(0.1)

    await a.stop()
    took = await eventually(lambda: b.is_leader, within_s=2, what="b takes over")

    assert took < LONG_TTL.lease_ttl_s / 2  # one follower poll (0.2 s), not a whole ttl


async def test_a_leader_whose_lease_was_taken_stops_at_its_next_renewal(
    replicas: Callable[..., Replica], engine: AsyncEngine
) -> None:
    a, a_duties = replicas("a", settings=LONG_TTL)
    await a.start()
    await eventually(lambda: a.is_leader, within_s=2, what="a leads")
    # Someone whose clock is far ahead sees a's lease as expired and takes it.
    ahead = ManualClock(datetime.now(UTC))
    ahead.advance(3600)
    usurper = Leases(sessions=session_factory(engine), clock=ahead)
    assert await usurper.acquire_or_renew(name=LEASE_NAME, holder="z", ttl_s=60) is not None

    took = await eventually(lambda: not a.is_leader, within_s=2, what="a steps down")

    assert took < LONG_TTL.lease_ttl_s / 2  # at its next renewal, not its own deadline
    assert a.status().holder == "z"
    calls = sum(a_duties.calls.values())
    await asyncio.sleep(0.5)
    assert sum(a_duties.calls.values()) == calls


async def test_a_leader_cut_off_from_the_database_stops_before_its_lease_expires(
    replicas: Callable[..., Replica], engine: AsyncEngine, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("needs a lock that async callers can time out of: PostgreSQL's")
    a, _ = replicas("a")
    await a.start()
    await eventually(lambda: a.is_leader, within_s=2, what="a leads")

    async with engine.begin() as conn:  # renewals now hang on the table lock
        await conn.execute(text("LOCK TABLE leases IN ACCESS EXCLUSIVE MODE"))
        last_expiry = a.status().expires_at
        await eventually(lambda: not a.is_leader, within_s=2, what="a steps down")
        stopped_at = datetime.now(UTC)
        assert last_expiry is not None
        renewed = a.status().expires_at
        assert renewed is not None
        assert renewed >= last_expiry  # at most one more renewal got through
        assert stopped_at < renewed  # it stopped while its lease was still good
        assert a.status().last_error is not None
    # the lock is gone: a renews its own, still-unexpired-or-free lease and leads again
    await eventually(lambda: a.is_leader, within_s=2, what="a leads again")


async def test_a_disabled_replica_never_competes(replicas: Callable[..., Replica]) -> None:
    a, _ = replicas("a", settings=FAST.model_copy(update={"enabled": False}))
    await a.start()
    await asyncio.sleep(0.3)

    assert not a.is_leader
    assert a.status().holder is None


async def test_restarting_the_leader_keeps_one_row_per_job(
    replicas: Callable[..., Replica], engine: AsyncEngine
) -> None:
    settings = ScheduleSettings(lease_ttl_s=1.0, renew_s=0.2)  # default job intervals
    for name in ("first", "second", "third"):
        leader, _ = replicas(name, settings=settings)
        await leader.start()
        await eventually(leads(leader), within_s=2, what=f"{name} leads")
        await leader.stop()

    async with engine.connect() as conn:
        ids = (await conn.execute(select(apscheduler_jobs.c.id))).scalars().all()
    assert sorted(ids) == sorted(DUTIES)
