"""Fixtures for the end-to-end burst tests: the fake servers and a broker built on them.

The AWS fixtures (moto's server, reset per test, behind the stub proxy; the AWS environment
emptied) and the GCP one that keeps google-auth off the internet are the connector suites'
own, imported so both sides test against the same fakes.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.domain.clock import ManualClock
from connectors.settings import SiteSettings
from connectors.threads import Blocking
from tests.burst.world import Forecast, World, build_world, close_world, new_kube
from tests.connectors.aws.conftest import (  # noqa: F401 - fixtures
    USER_DATA,
    aws_env,
    moto_server,
    moto_url,
    proxy,
)
from tests.connectors.gcp.conftest import no_internet  # noqa: F401 - fixture
from tests.connectors.gcp.fake_compute import FakeCompute
from tests.connectors.kubernetes import objects
from tests.connectors.kubernetes.fake_api import FakeKubernetes

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(autouse=True)
def offline(no_internet: None) -> Iterator[None]:  # noqa: F811 - the fixture
    """The GCP suite's proxy trap for requests off this machine, and afterwards a fresh
    `urllib` opener: the global one keeps the proxy settings it was built under, and moto's
    reset (`urlopen`) in a later test would go to the trap."""
    yield
    urllib.request.install_opener(None)  # the next urlopen builds one from the clean env


@pytest.fixture(autouse=True)
def cluster_clock(monkeypatch: pytest.MonkeyPatch, clock: ManualClock) -> None:
    """The fake cluster stamps Jobs and pods with the test's clock, as a real cluster shares
    (near enough) the broker's time: job start and end times come from the cluster."""
    monkeypatch.setattr(objects, "now", lambda: clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"))


@pytest.fixture
async def kube() -> AsyncIterator[FakeKubernetes]:
    server = new_kube()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def compute() -> AsyncIterator[FakeCompute]:
    server = FakeCompute()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    pool = Blocking(4)
    yield pool
    pool.shutdown()


@pytest.fixture
def user_data(tmp_path: Path) -> Path:
    path = tmp_path / "join-cluster.sh"
    path.write_text(USER_DATA, encoding="utf-8")
    return path


@pytest.fixture
async def make_world(
    tmp_path: Path, clock: ManualClock, kube: FakeKubernetes, blocking: Blocking
) -> AsyncIterator[MakeWorld]:
    """`await make_world(clouds=[...], burst={...})`; closed after the test."""
    made: list[World] = []

    async def make(
        *,
        clouds: list[SiteSettings],
        burst: dict[str, Any] | None = None,
        forecast: Forecast | None = None,
    ) -> World:
        world = await build_world(
            tmp_path=tmp_path,
            clock=clock,
            kube=kube,
            blocking=blocking,
            clouds=clouds,
            burst=burst or {},
            forecast=forecast,
        )
        made.append(world)
        return world

    yield make
    for world in made:
        await close_world(world)
