"""Fixtures: a fake API server per test, connectors pointed at it through a real kubeconfig,
the contract suite's `harness`, and a check that no task or thread outlives a test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from broker.domain.clock import ManualClock
from broker.domain.jobs import Job, Placement
from connectors.kubernetes.client import kubeconfig_loader
from connectors.kubernetes.connector import KubernetesConnector
from connectors.kubernetes.labels import OWNER_LABEL
from connectors.kubernetes.settings import KubernetesSettings
from connectors.threads import Blocking
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.fake_api import FakeKubernetes, write_kubeconfig
from tests.connectors.kubernetes.helpers import START, new_token, no_sleep, placement_for, site

MakeConnector = Callable[..., KubernetesConnector]


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """No follow task and no watch or SDK thread may outlive a test."""
    before = set(threading.enumerate())
    yield
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("follow:") and not t.done()]
    assert not tasks, f"tasks left running: {tasks}"
    extra: list[threading.Thread] = []
    for _ in range(300):
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra:
            break
        await asyncio.sleep(0.01)
    assert not extra, f"threads left running: {extra}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes(token=new_token())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def blocking() -> Any:
    pool = Blocking(4)
    yield pool
    pool.shutdown()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def make_connector(
    fake: FakeKubernetes, tmp_path: Path, blocking: Blocking, clock: ManualClock
) -> AsyncIterator[MakeConnector]:
    """Connectors on the fake (or another server / kubeconfig), closed after the test."""
    made: list[KubernetesConnector] = []

    def make(
        *,
        server: FakeKubernetes | None = None,
        kubeconfig: Path | None = None,
        context: str | None = None,
        site_name: str = "oslo",
        page_size: int = 500,
        **settings: Any,
    ) -> KubernetesConnector:
        server = server or fake
        if kubeconfig is None:
            kubeconfig = tmp_path / f"{site_name}-{len(made)}.kubeconfig"
            write_kubeconfig(kubeconfig, {"fake": (server.url, server.token)}, current="fake")
        parsed = KubernetesSettings(
            kubeconfig=kubeconfig,
            context=context,
            in_cluster=False,
            **{"watch_timeout_s": 5, "request_timeout_s": 5.0, **settings},
        )
        connector = KubernetesConnector(
            site=site(site_name),
            settings=parsed,
            loader=kubeconfig_loader(kubeconfig, context),
            clock=clock,
            blocking=blocking,
            sleep=no_sleep,
            page_size=page_size,
        )
        made.append(connector)
        return connector

    yield make
    for connector in made:
        await connector.close()


class KubernetesHarness:
    """The contract suite's handle on a started connector and its fake cluster."""

    def __init__(self, connector: KubernetesConnector, fake: FakeKubernetes) -> None:
        self.connector = connector
        self.fake = fake
        self.secret = fake.token

    async def placement(self, job: Job) -> Placement:
        inv = await self.connector.inventory()
        return placement_for(job, inv.pools[0])

    async def remote_ids(self) -> set[str]:
        return {
            name
            for (_, name), job in self.fake.jobs.items()
            if job["metadata"]["labels"].get(OWNER_LABEL) == "gpu-broker"
        }

    async def finish(self, external_id: str, *, succeeded: bool) -> None:
        """The Job's pod ends and the Job controller marks it Complete or Failed (the pod is
        created already ended, so the only update the connector sees is the terminal one)."""
        self.fake.finish_job(external_id, succeeded=succeeded)

    def reject_credentials(self) -> None:
        self.fake.reject_credentials()

    def throttle(self, calls: int) -> None:
        self.fake.throttle(calls)


@pytest.fixture
async def harness(fake: FakeKubernetes, make_connector: MakeConnector) -> KubernetesHarness:
    """A started connector on a fake with two H100 nodes (closed by `make_connector`)."""
    fake.add_node(o.gpu_node("gpu-a"))
    fake.add_node(o.gpu_node("gpu-b"))
    connector = make_connector()
    await connector.start()
    return KubernetesHarness(connector, fake)
