"""Fixtures for the live sources: a virtual clock and sleep, one client session, fake servers.

Every source gets the same injected `VirtualClock` (fixed at NOW until a test moves it) and a
sleep that only records the delay and moves that clock, so retries, backoff and rate limiting
take no wall time. The one `aiohttp.ClientSession` is opened and closed here, and the teardown
fails the test if a task started by carbon.live code is still running.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from carbon.live import (
    ElectricityMapsSettings,
    ElectricityMapsSource,
    UKCarbonIntensitySettings,
    UKCarbonIntensitySource,
    WattTimeSettings,
    WattTimeSource,
)
from tests.carbon.live import fake_electricitymaps, fake_watttime
from tests.carbon.live.fake_common import VirtualClock
from tests.carbon.live.fake_electricitymaps import FakeElectricityMaps
from tests.carbon.live.fake_uk import FakeUK
from tests.carbon.live.fake_watttime import FakeWattTime

NOW = datetime(2026, 11, 23, 10, 20, tzinfo=UTC)
EM_ENV = "CARBON_TEST_EM_TOKEN"
WT_ENV = "CARBON_TEST_WT_PASSWORD"
_LIVE_CODE = f"{os.sep}carbon{os.sep}live{os.sep}"


class Sleeps:
    """An injected sleep: records each delay and moves the virtual clock by it."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.advance(delay)
        await asyncio.sleep(0)


class MaxJitter(random.Random):
    """Full jitter pinned to its upper bound, so backoff delays are predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _live_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    leaked = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if task is not current and not task.done() and code and _LIVE_CODE in code.co_filename:
            leaked.append(task)
    return leaked


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(NOW)


@pytest.fixture
def sleeps(clock: VirtualClock) -> Sleeps:
    return Sleeps(clock)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as shared:
        yield shared
    assert not _live_tasks(), f"tasks left running: {_live_tasks()}"


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EM_ENV, fake_electricitymaps.TOKEN)
    monkeypatch.setenv(WT_ENV, fake_watttime.PASSWORD)


# ---- fake servers --------------------------------------------------------------------------


@pytest.fixture
def em_fake(clock: VirtualClock) -> FakeElectricityMaps:
    return FakeElectricityMaps(clock)


@pytest.fixture
async def em_server(aiohttp_server: Any, em_fake: FakeElectricityMaps) -> TestServer:
    server: TestServer = await aiohttp_server(em_fake.app())
    return server


@pytest.fixture
def wt_fake(clock: VirtualClock) -> FakeWattTime:
    return FakeWattTime(clock)


@pytest.fixture
async def wt_server(aiohttp_server: Any, wt_fake: FakeWattTime) -> TestServer:
    server: TestServer = await aiohttp_server(wt_fake.app())
    return server


@pytest.fixture
def uk_fake(clock: VirtualClock) -> FakeUK:
    return FakeUK(clock)


@pytest.fixture
async def uk_server(aiohttp_server: Any, uk_fake: FakeUK) -> TestServer:
    server: TestServer = await aiohttp_server(uk_fake.app())
    return server


# ---- sources wired to them -----------------------------------------------------------------


def url(server: TestServer, path: str = "") -> str:
    return str(server.make_url(path)).rstrip("/")


@pytest.fixture
def make_em(
    em_server: TestServer,
    session: aiohttp.ClientSession,
    clock: VirtualClock,
    sleeps: Sleeps,
    secrets_env: None,
) -> Callable[..., ElectricityMapsSource]:
    """An ElectricityMapsSource on the fake; keyword arguments override settings (`basis`
    is the deployment's basis, given to the source)."""

    def make(basis: Any = None, **overrides: Any) -> ElectricityMapsSource:
        values: dict[str, Any] = {"base_url": url(em_server, "/v3"), "api_key_env": EM_ENV}
        values.update(overrides)
        return ElectricityMapsSource(
            ElectricityMapsSettings(**values),
            basis=basis,
            session=session,
            clock=clock,
            sleep=sleeps,
            rng=MaxJitter(),
        )

    return make


@pytest.fixture
def make_wt(
    wt_server: TestServer,
    session: aiohttp.ClientSession,
    clock: VirtualClock,
    sleeps: Sleeps,
    secrets_env: None,
) -> Callable[..., WattTimeSource]:
    def make(**overrides: Any) -> WattTimeSource:
        values: dict[str, Any] = {
            "base_url": url(wt_server),
            "username": fake_watttime.USERNAME,
            "password_env": WT_ENV,
            "regions": {"US-CAL-CISO": "CAISO_NORTH", "US-MIDA-PJM": "PJM_ROANOKE"},
            "requests_per_second": None,
        }
        values.update(overrides)
        return WattTimeSource(
            WattTimeSettings(**values), session=session, clock=clock, sleep=sleeps, rng=MaxJitter()
        )

    return make


@pytest.fixture
def make_uk(
    uk_server: TestServer, session: aiohttp.ClientSession, clock: VirtualClock, sleeps: Sleeps
) -> Callable[..., UKCarbonIntensitySource]:
    def make(**overrides: Any) -> UKCarbonIntensitySource:
        values: dict[str, Any] = {"base_url": url(uk_server)}
        values.update(overrides)
        return UKCarbonIntensitySource(
            UKCarbonIntensitySettings(**values),
            session=session,
            clock=clock,
            sleep=sleeps,
            rng=MaxJitter(),
        )

    return make


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "em-token"
    path.write_text(fake_electricitymaps.TOKEN + "\n", encoding="utf-8")
    return path
