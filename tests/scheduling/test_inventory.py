"""Inventory refresh: pools that join and leave reach the store; failures mark the site."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Self

import pytest

from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.repository import Store
from broker.domain.clock import ManualClock
from broker.domain.enums import Health, SiteKind
from broker.domain.fleet import GpuPool, Site
from broker.scheduling.inventory import refresh_inventory
from connectors.base import BuildContext, Connector, SiteInventory, StatusUpdate
from connectors.errors import AuthFailed, TransientError
from connectors.settings import SiteSettings

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def site(name: str) -> Site:
    return Site(
        name=name,
        kind=SiteKind.SIM,
        region="r",
        location="aws:us-east-1",
        grid_zone="US-MIDA-PJM",
        private=True,
    )


def pool(site_name: str, model: str, nodes: int) -> GpuPool:
    return GpuPool(
        id=f"{site_name}/{model}",
        site=site_name,
        gpu_model=model,
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=nodes,
        price_on_demand=2.0,
    )


class Scripted(Connector):
    """A connector whose next inventory answer (or error) the test sets."""

    kind = SiteKind.SIM

    def __init__(self, name: str) -> None:
        self.name = name
        self.answer: SiteInventory | Exception = SiteInventory(site=site(name), pools=())

    @classmethod
    def from_settings(cls, *, site: SiteSettings, context: BuildContext) -> Self:
        raise NotImplementedError

    @property
    def site_name(self) -> str:
        return self.name

    async def inventory(self) -> SiteInventory:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def dispatch(self, **_: Any) -> str:
        raise NotImplementedError

    async def cancel(self, **_: Any) -> None:
        raise NotImplementedError

    async def adopt(self, **_: Any) -> None:
        raise NotImplementedError

    async def updates(self) -> AsyncIterator[StatusUpdate]:
        for update in ():
            yield update


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    engine = create_engine(database_url)
    await upgrade(engine)
    yield Store(sessions=session_factory(engine), clock=ManualClock(T0))
    await engine.dispose()


async def test_joining_and_leaving_capacity_and_failures(store: Store) -> None:
    lab, cloud = Scripted("lab"), Scripted("cloud")
    lab.answer = SiteInventory(site=site("lab"), pools=(pool("lab", "A100", 2),))
    cloud.answer = SiteInventory(site=site("cloud"), pools=(pool("cloud", "H100", 1),))
    connectors = {"lab": lab, "cloud": cloud}
    assert await refresh_inventory(store=store, connectors=connectors) == "2 site(s): 2 read"

    # Burst nodes joined the cloud site (a second pool); the lab's A100 nodes were reclaimed.
    cloud.answer = SiteInventory(
        site=site("cloud"), pools=(pool("cloud", "H100", 3), pool("cloud", "L4", 2))
    )
    lab.answer = SiteInventory(site=site("lab"), pools=())
    await refresh_inventory(store=store, connectors=connectors)
    nodes = {p.id: p.nodes for p in await store.pools()}
    assert nodes == {"lab/A100": 0, "cloud/H100": 3, "cloud/L4": 2}

    lab.answer = AuthFailed("token rejected (401)", site="lab")
    cloud.answer = TransientError("timed out", site="cloud")
    summary = await refresh_inventory(store=store, connectors=connectors)
    assert summary == "2 site(s): 0 read, lab auth_failed, cloud unreachable"
    health = {s.name: (s.health, s.health_reason) for s in await store.sites()}
    assert health["lab"] == (Health.AUTH_FAILED, "lab: token rejected (401)")
    assert health["cloud"][0] is Health.UNREACHABLE
    # The ledger is kept through the outage.
    assert {p.id: p.nodes for p in await store.pools()} == nodes

    cloud.answer = SiteInventory(site=replace(site("cloud")), pools=(pool("cloud", "H100", 3),))
    await refresh_inventory(store=store, connectors={"cloud": cloud})
    assert {s.name: s.health for s in await store.sites()}["cloud"] is Health.HEALTHY
