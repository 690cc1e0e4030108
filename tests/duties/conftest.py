"""Fixtures for the scheduled work: a migrated engine per backend, fake duties, leak checks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.connection import create_engine, upgrade
from broker.duties.settings import ScheduleSettings

# Short enough that a failover test takes about a second; the ratios are the defaults'.
FAST = ScheduleSettings(
    lease_ttl_s=1.0,
    renew_s=0.2,
    retrain_every_s=0.2,
    plan_every_s=0.2,
    carbon_every_s=0.2,
    inventory_every_s=0.2,
    reclaim_every_s=0.2,
)

DUTIES = (
    "retrain_forecast",
    "plan_capacity",
    "refresh_carbon",
    "refresh_inventory",
    "reclaim_idle",
)


class RecordingDuties:
    """Counts calls per duty; the duties named in `failing` raise instead."""

    def __init__(self, *, failing: frozenset[str] = frozenset()) -> None:
        self.calls: Counter[str] = Counter()
        self._failing = failing

    async def _do(self, name: str) -> str:
        self.calls[name] += 1
        if name in self._failing:
            raise RuntimeError(f"{name} broke")
        return f"{name} #{self.calls[name]}"

    async def retrain_forecast(self) -> str:
        return await self._do("retrain_forecast")

    async def plan_capacity(self) -> str:
        return await self._do("plan_capacity")

    async def refresh_carbon(self) -> str:
        return await self._do("refresh_carbon")

    async def refresh_inventory(self) -> str:
        return await self._do("refresh_inventory")

    async def reclaim_idle(self) -> str:
        return await self._do("reclaim_idle")


async def eventually(
    condition: Callable[[], bool], *, within_s: float, what: str, step_s: float = 0.02
) -> float:
    """Poll until `condition` holds; returns the seconds it took, fails after `within_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within_s:
            pytest.fail(f"not within {within_s}s: {what}")
        await asyncio.sleep(step_s)
    return time.monotonic() - started


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated database (the SQLite file starts empty; PostgreSQL's is a
    clone of the migrated template, so `upgrade` is a no-op there)."""
    eng = create_engine(database_url)
    await upgrade(eng)
    yield eng
    await eng.dispose()


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Every test stops what it started: no tasks left, no extra threads left."""
    threads = set(threading.enumerate())
    yield
    me = asyncio.current_task()

    def leaked_tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t is not me and not t.done()]

    def leaked_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in threads and t.is_alive()]

    for _ in range(100):  # up to 2 s: aiosqlite's threads end just after their close
        if not (leaked_tasks() or leaked_threads()):
            break
        await asyncio.sleep(0.02)
    assert not leaked_tasks(), f"tasks left running: {leaked_tasks()}"
    assert not leaked_threads(), f"threads left running: {leaked_threads()}"
