"""The lease: one holder at a time, renewals, expiry by the injected clock, release."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.connection import session_factory
from broker.db.leases import Leases
from broker.domain.clock import ManualClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAME = "scheduled-jobs"


def leases(engine: AsyncEngine, clock: ManualClock) -> Leases:
    return Leases(sessions=session_factory(engine), clock=clock)


async def test_of_two_holders_only_the_first_gets_it(engine: AsyncEngine) -> None:
    clock = ManualClock(T0)
    store = leases(engine, clock)

    a = await store.acquire_or_renew(name=NAME, holder="a", ttl_s=15)
    b = await store.acquire_or_renew(name=NAME, holder="b", ttl_s=15)

    assert a is not None
    assert (a.holder, a.acquired_at, a.renewed_at) == ("a", T0, T0)
    assert a.expires_at == T0 + timedelta(seconds=15)
    assert b is None
    seen = await store.read(NAME)
    assert seen is not None
    assert seen.holder == "a"


async def test_the_holder_renews_and_keeps_its_acquired_time(engine: AsyncEngine) -> None:
    clock = ManualClock(T0)
    store = leases(engine, clock)
    await store.acquire_or_renew(name=NAME, holder="a", ttl_s=15)

    clock.advance(10)
    renewed = await store.acquire_or_renew(name=NAME, holder="a", ttl_s=15)
    clock.advance(10)  # past the first expiry, within the renewed one
    other = await store.acquire_or_renew(name=NAME, holder="b", ttl_s=15)

    assert renewed is not None
    assert renewed.acquired_at == T0
    assert renewed.renewed_at == T0 + timedelta(seconds=10)
    assert renewed.expires_at == T0 + timedelta(seconds=25)
    assert other is None


async def test_another_takes_over_once_the_lease_expired(engine: AsyncEngine) -> None:
    clock = ManualClock(T0)
    store = leases(engine, clock)
    await store.acquire_or_renew(name=NAME, holder="a", ttl_s=15)

    clock.advance(15)  # exactly at expiry: still a's
    at_expiry = await store.acquire_or_renew(name=NAME, holder="b", ttl_s=15)
    clock.advance(0.001)
    taken = await store.acquire_or_renew(name=NAME, holder="b", ttl_s=15)
    late_renewal = await store.acquire_or_renew(name=NAME, holder="a", ttl_s=15)

    assert at_expiry is None
    assert taken is not None
    assert taken.holder == "b"
    assert taken.acquired_at == clock.now()  # a new holder's own acquisition time
    assert late_renewal is None


async def test_release_lets_another_take_it_at_once(engine: AsyncEngine) -> None:
    clock = ManualClock(T0)
    store = leases(engine, clock)
    await store.acquire_or_renew(name=NAME, holder="a", ttl_s=15)

    assert await store.release(name=NAME, holder="b") is False  # not b's to give
    assert await store.release(name=NAME, holder="a") is True
    taken = await store.acquire_or_renew(name=NAME, holder="b", ttl_s=15)

    assert taken is not None
    assert taken.holder == "b"


async def test_leases_are_independent_by_name(engine: AsyncEngine) -> None:
    store = leases(engine, ManualClock(T0))

    one = await store.acquire_or_renew(name="one", holder="a", ttl_s=15)
    two = await store.acquire_or_renew(name="two", holder="b", ttl_s=15)

    assert one is not None
    assert two is not None


async def test_of_many_simultaneous_attempts_exactly_one_wins(engine: AsyncEngine) -> None:
    # The engine's pool has a connection per attempt, so on PostgreSQL the statements
    # really race; SQLite serialises them, which must give the same answer.
    clock = ManualClock(T0)
    store = leases(engine, clock)
    for _ in range(3):  # a fresh row, then twice over an expired one
        results = await asyncio.gather(
            *(store.acquire_or_renew(name=NAME, holder=f"h{i}", ttl_s=15) for i in range(20))
        )
        winners = [r.holder for r in results if r is not None]
        assert len(winners) == 1, winners
        seen = await store.read(NAME)
        assert seen is not None
        assert seen.holder == winners[0]
        clock.advance(16)
