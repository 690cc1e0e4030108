"""Fixtures for the GCP connector: the fake Compute Engine server, a real service-account key
file pointing at it, connectors built on the real google-cloud-compute REST clients, and the
`harness` the shared contract suite drives.

Retries use a zero-delay backoff and a recording sleep, so throttling tests take no wall time
but still show how often the connector backed off.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.domain.clock import ManualClock
from broker.domain.enums import SiteKind
from broker.domain.jobs import Job, Placement
from connectors.gcp.connector import GcpConnector
from connectors.gcp.settings import parse
from connectors.retry import Backoff
from connectors.settings import SiteSettings, site_from_settings
from connectors.threads import Blocking
from tests.connectors.gcp.fake_auth import ServiceAccountKey
from tests.connectors.gcp.fake_compute import FakeCompute

SITE = "gcp-us-central1"
EMAIL = "broker@broker-test.iam.gserviceaccount.com"
START = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
OWNED = {"gpu-broker-owner": "gpu-broker", "gpu-broker-site": SITE}


@dataclass
class Sleeps:
    """A sleep that records its delays instead of waiting."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.fixture(autouse=True)
def no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep every request on this machine: anything not for 127.0.0.1 goes to a refusing port.

    Besides the fake, google-auth (2.62) calls out by itself: after a token refresh it looks
    up the service account's Regional Access Boundary at iamcredentials.googleapis.com in a
    background thread (and enters a cooldown when that fails). The proxy variables are the
    transport's ordinary configuration; nothing in the SDK is patched.
    """
    refuser = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refuser.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    proxy = f"http://127.0.0.1:{refuser.getsockname()[1]}"
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, proxy)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    yield
    refuser.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeCompute]:
    server = FakeCompute()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def key() -> ServiceAccountKey:
    return ServiceAccountKey.generate(email=EMAIL)


@pytest.fixture
def key_file(tmp_path: Path, fake: FakeCompute, key: ServiceAccountKey) -> Path:
    fake.auth.register(key)
    return key.json_file(
        tmp_path / "broker-sa.json", token_uri=f"{fake.endpoint}/token", project=fake.project
    )


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    """A private pool per test; afterwards no thread started during the test may remain."""
    before = _threads()
    pool = Blocking(4)
    yield pool
    pool.shutdown()
    deadline = time.monotonic() + 5
    while _threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _threads() - before, f"threads left running: {_threads() - before}"


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def site_settings(**connector: Any) -> SiteSettings:
    return SiteSettings(
        name=SITE,
        kind=SiteKind.GCP,
        region="us-central1",
        grid_zone="US-MIDA-PJM",
        connector=connector,
    )


MakeConnector = Callable[..., GcpConnector]


@pytest.fixture
async def make_connector(
    fake: FakeCompute,
    key_file: Path,
    blocking: Blocking,
    sleeps: Sleeps,
    clock: ManualClock,
    tmp_path: Path,
) -> AsyncIterator[MakeConnector]:
    """Build connectors on the fake; keyword arguments override connector settings."""
    made: list[GcpConnector] = []
    (tmp_path / "join.sh").write_text("#!/bin/sh\nkubeadm join 10.0.0.2:6443\n", encoding="utf-8")

    def make(**overrides: Any) -> GcpConnector:
        values: dict[str, Any] = {
            "project": fake.project,
            "credentials_file": key_file.name,  # relative: resolved against the config dir
            "api_endpoint": fake.endpoint,
            "zones": ["us-central1-a", "us-central1-b", "us-central1-c"],
            "startup_script_file": "join.sh",
        }
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not None}
        site = site_settings(**values)
        connector = GcpConnector(
            settings=parse(site, config_dir=tmp_path),
            site=site_from_settings(site),
            clock=clock,
            blocking=blocking,
            backoff=Backoff(attempts=4, base_s=0.0, cap_s=0.0),
            sleep=sleeps,
        )
        made.append(connector)
        return connector

    yield make
    for connector in made:
        await connector.close()


@pytest.fixture
async def connector(make_connector: MakeConnector) -> GcpConnector:
    return make_connector()


@dataclass
class GcpHarness:
    """The contract suite's view of a GCP site (see tests/connectors/harness.py)."""

    connector: GcpConnector
    secret: str
    fake: FakeCompute

    async def placement(self, job: Job) -> Placement:
        pool = (await self.connector.inventory()).pools[0]
        demand = job.spec.resources.demand
        return Placement(
            job_id=job.id,
            site=self.connector.site_name,
            pool_id=pool.id,
            gpu_milli=1000,
            price_per_gpu_hour=pool.price_on_demand,
            spot=False,
            estimated_cost_usd=0.0,
            estimated_gco2=None,
            created_at=START,
            node_names=pool.names()[:1],
            node_gpus=pool.gpus_on((0,), demand),
            cpu_milli=demand.cpu_milli,
            memory_mb=demand.memory_mb,
        )

    async def remote_ids(self) -> set[str]:
        return self.fake.live(OWNED)

    async def finish(self, external_id: str, *, succeeded: bool) -> None:
        raise NotImplementedError("a GCP site provisions capacity; it does not follow jobs")

    def reject_credentials(self) -> None:
        self.fake.revoke()

    def throttle(self, calls: int) -> None:
        self.fake.throttle(calls)


@pytest.fixture
async def harness(connector: GcpConnector, fake: FakeCompute, key: ServiceAccountKey) -> GcpHarness:
    await connector.start()
    return GcpHarness(connector=connector, secret=key.private_key_pem, fake=fake)
