"""Fixtures for the AWS connector: moto in-process and as a server, and a stub proxy before it.

* `mocked`: `moto.mock_aws` in this process (fast; for inventory, provisioning, credentials).
* `moto_url` / `proxy`: a `ThreadedMotoServer` on a free port, reset before each test, and a
  `StubProxy` in front of it that injects real EC2/STS error answers (capacity, throttling,
  revoked credentials). The connector reaches it through `endpoint_url`, as production
  reaches VPC endpoints.
* `harness`: the contract suite's view of this connector (server mode, through the proxy).

Every test runs with the AWS environment emptied (no real profile or key can leak in, no
instance-metadata lookups) and with moto's EC2 instance-type validation on, so launching a
type the region does not offer fails as it does on AWS.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import moto.settings
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from broker.domain.clock import ManualClock
from broker.domain.enums import SiteKind
from broker.domain.jobs import Job, Placement
from connectors.aws.connector import AwsConnector
from connectors.aws.mapping import ALIVE_STATES, TAG_OWNER, TAG_SITE
from connectors.base import BuildContext
from connectors.retry import Backoff
from connectors.settings import SiteSettings
from connectors.threads import Blocking
from tests.connectors.aws.fakes import StubProxy

REGION = "us-east-1"
SITE = "aws-test"
# An AMI id of the real shape. Launches do not look images up (moto's AMI validation is off,
# as AWS would only fail later at boot); the check() tests register a real image instead.
IMAGE_ID = "ami-12c6146b"
# The contract suite checks this never shows in errors, logs or results. 40 characters of the
# alphabet real secret keys use, so scrubbing it depends on its shape, not on knowing it.
SECRET = "Pl4ntedSecretAccessKey0123456789abcdefgh"
ACCESS_KEY = "AKIAPLANTEDKEY000001"
USER_DATA = (
    "#!/bin/bash\n/etc/eks/bootstrap.sh gpu-burst --kubelet-extra-args '--node-labels=gpu'\n"
)
ZERO_BACKOFF = Backoff(attempts=4, base_s=0.0, cap_s=0.0)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # moto reads the variable once at import; set both so the switch holds either way.
    monkeypatch.setenv("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
    monkeypatch.setattr(moto.settings, "EC2_ENABLE_INSTANCE_TYPE_VALIDATION", True)
    # moto builds ~300 default AMIs per region on every reset (most of a test's time); tests
    # that need an image register one.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def use_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the planted key pair in the environment (the default credential chain's first stop)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with mock_aws():
        use_keys(monkeypatch)
        yield


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def moto_post(url: str, path: str, data: bytes = b"") -> None:
    request = urllib.request.Request(
        f"{url}{path}", data=data, headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def moto_url(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    moto_post(moto_server, "/moto-api/reset")
    use_keys(monkeypatch)
    return moto_server


@pytest.fixture
def proxy(moto_url: str) -> Iterator[StubProxy]:
    stub = StubProxy(moto_url)
    stub.start()
    yield stub
    stub.stop()
    assert not stub.thread.is_alive(), "the stub proxy's thread outlived its test"


@pytest.fixture
def user_data_file(tmp_path: Path) -> Path:
    path = tmp_path / "join-cluster.sh"
    path.write_text(USER_DATA, encoding="utf-8")
    return path


@dataclass
class Built:
    """What `aws` made: the connector and the zero-delay sleeps its retries took."""

    connector: AwsConnector
    sleeps: list[float]
    clock: ManualClock


@pytest.fixture
async def aws(tmp_path: Path, user_data_file: Path) -> AsyncIterator[Callable[..., Built]]:
    """Build connectors: `aws(endpoint_url=..., **connector_settings)`; all closed afterwards."""
    before = set(threading.enumerate())
    blocking = Blocking(4)
    made: list[Built] = []

    def build(*, site: str = SITE, region: str = REGION, **connector: Any) -> Built:
        if "launch_template" not in connector:
            connector.setdefault("image_id", IMAGE_ID)
            connector.setdefault("user_data_file", user_data_file.name)
        sleeps: list[float] = []

        async def sleep(delay: float) -> None:
            sleeps.append(delay)

        clock = ManualClock(datetime(2026, 1, 5, tzinfo=UTC))
        connector_ = AwsConnector.build(
            site=site_settings(name=site, region=region, connector=connector),
            context=BuildContext(config_dir=tmp_path, blocking=blocking, clock=clock),
            backoff=ZERO_BACKOFF,
            sleep=sleep,
        )
        built = Built(connector=connector_, sleeps=sleeps, clock=clock)
        made.append(built)
        return built

    yield build
    for built in made:
        await built.connector.close()
    blocking.shutdown()
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("sdk"):
            thread.join(timeout=5)  # idle workers exit on the shutdown sentinel
            assert not thread.is_alive(), f"SDK thread {thread.name} outlived its test"


def site_settings(
    *, name: str = SITE, region: str = REGION, connector: dict[str, Any] | None = None
) -> SiteSettings:
    return SiteSettings(
        name=name,
        kind=SiteKind.AWS,
        region=region,
        grid_zone="US-MIDA-PJM",
        connector=connector or {},
    )


@functools.cache
def raw_ec2(endpoint_url: str | None = None, *, region: str = REGION) -> Any:
    """A plain boto3 client for arranging and inspecting state behind the connector's back
    (cached: creating a client parses botocore's EC2 model, a good part of a second)."""
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="AKIAINSPECTOR0000001",
        aws_secret_access_key="inspector-secret",
    )


def register_image(client: Any) -> str:
    """An AMI in the fake account (moto's default images are off)."""
    return str(
        client.register_image(
            Name="gpu-node",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 100}}],
        )["ImageId"]
    )


def owned_ids(client: Any, *, site: str = SITE, states: tuple[str, ...] = ALIVE_STATES) -> set[str]:
    pages = client.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{TAG_OWNER}", "Values": ["gpu-broker"]},
            {"Name": f"tag:{TAG_SITE}", "Values": [site]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )
    return {i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]}


class AwsHarness:
    """The contract suite's handle on an AWS site: server-mode moto behind the stub proxy."""

    def __init__(self, *, built: Built, proxy: StubProxy, moto_url: str) -> None:
        self.connector = built.connector
        self.secret = SECRET
        self.sleeps = built.sleeps
        self.proxy = proxy
        self._clock = built.clock
        self._inspect = raw_ec2(moto_url)  # straight to moto: throttles do not reach it

    async def placement(self, job: Job) -> Placement:
        pool = (await self.connector.inventory()).pools[0]
        demand = job.spec.resources.demand
        return Placement(
            job_id=job.id,
            site=self.connector.site_name,
            pool_id=pool.id,
            gpu_milli=job.spec.resources.total_milli,
            price_per_gpu_hour=pool.price_on_demand,
            spot=False,
            estimated_cost_usd=0.0,
            estimated_gco2=None,
            created_at=self._clock.now(),
            node_names=pool.names()[:1],
            node_gpus=pool.gpus_on((0,), demand),
            cpu_milli=demand.cpu_milli,
            memory_mb=demand.memory_mb,
        )

    async def remote_ids(self) -> set[str]:
        return await asyncio.to_thread(owned_ids, self._inspect, states=("pending", "running"))

    async def finish(self, external_id: str, *, succeeded: bool) -> None:
        raise NotImplementedError("an AWS site provisions capacity; it does not follow jobs")

    def reject_credentials(self) -> None:
        self.proxy.reject_credentials()

    def throttle(self, calls: int) -> None:
        self.proxy.throttle(calls)


@pytest.fixture
async def harness(
    aws: Callable[..., Built], proxy: StubProxy, moto_url: str
) -> AsyncIterator[AwsHarness]:
    image = register_image(raw_ec2(moto_url))
    built = aws(endpoint_url=proxy.url, image_id=image)
    await built.connector.start()
    yield AwsHarness(built=built, proxy=proxy, moto_url=moto_url)
    await built.connector.close()  # before the proxy and the pool go (`aws` closes it again)
