"""A whole broker around the burster, on real connectors and servers that speak the wire.

* the private cluster `oslo`: the Kubernetes connector against the fake API server, where
  burst instances "join" when a test adds their node (with the instance's providerID);
* `aws-east`: the AWS connector against moto's server behind the stub proxy (fault hooks);
* `gcp-central`: the GCP connector against the fake Compute Engine server (fault hooks);
* the store on SQLite, the real scheduling loop (placing, dispatching, following the
  cluster's Job watch) and the burster, all on one manual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.burst.burster import Burster
from broker.burst.gather import ShortfallSource
from broker.burst.settings import BurstSettings, BurstTarget
from broker.db.capacity import CapacityStore
from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.repository import Store
from broker.domain.capacity import ActionKind, CapacityAction
from broker.domain.clock import ManualClock
from broker.domain.enums import JobKind, JobState, SiteKind, Tier
from broker.domain.jobs import Job, JobSpec, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.metrics import Metrics
from broker.scheduling.loop import SchedulingLoop
from broker.scheduling.settings import SchedulerSettings
from carbon.base import IntensityReading
from connectors.aws.connector import AwsConnector
from connectors.base import BuildContext, CloudInstance, Connector
from connectors.gcp.connector import GcpConnector
from connectors.gcp.settings import parse as parse_gcp
from connectors.kubernetes import labels as L
from connectors.kubernetes.client import kubeconfig_loader
from connectors.kubernetes.connector import KubernetesConnector
from connectors.kubernetes.settings import KubernetesSettings
from connectors.retry import Backoff
from connectors.settings import SiteSettings, site_from_settings
from connectors.threads import Blocking
from tests.connectors.gcp.fake_auth import ServiceAccountKey
from tests.connectors.gcp.fake_compute import FakeCompute
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.fake_api import FakeKubernetes, write_kubeconfig
from tests.connectors.kubernetes.helpers import new_token, no_sleep

ZERO_BACKOFF = Backoff(attempts=4, base_s=0.0, cap_s=0.0)
INTENSITY = {"NO": 30.0, "US-MIDA-PJM": 420.0, "US-MIDW-MISO": 480.0, "US-CAL-CISO": 200.0}
A100 = "NVIDIA-A100-SXM4-40GB"


class FixedCarbon:
    """A carbon source with one intensity per zone (there is no wire to fake here)."""

    name = "fixed"

    def __init__(self, table: Mapping[str, float]) -> None:
        self.table = dict(table)

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        value = self.table.get(zone)
        if value is None:
            return None
        hour = at.replace(minute=0, second=0, microsecond=0)
        return IntensityReading(zone=zone, at=hour, gco2_per_kwh=value, source=self.name)

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        first = await self.current(zone, at=start)
        out = []
        at = first.at if first is not None else end
        while first is not None and at < end:
            out.append(replace(first, at=at))
            at += timedelta(hours=1)
        return out


@dataclass(frozen=True)
class Short:
    at: datetime
    gpu_model: str
    shortfall: float


@dataclass
class Forecast:
    """A demand forecast the test sets: GPUs short per model over the coming hours."""

    short: dict[str, float] = field(default_factory=dict)
    shortfalls: tuple[Short, ...] = ()

    async def outlook(self, *, hours: int) -> Forecast:
        now = datetime(2026, 3, 2, tzinfo=UTC)
        self.shortfalls = tuple(
            Short(at=now, gpu_model=m, shortfall=g) for m, g in self.short.items()
        )
        return self


async def no_sleep_at_all(_: float) -> None:
    return None


@dataclass
class World:
    clock: ManualClock
    db: AsyncEngine
    store: Store
    capacity: CapacityStore
    kube: FakeKubernetes
    connectors: dict[str, Connector]
    loop: SchedulingLoop
    burster: Burster
    metrics: Metrics  # the scheduling loop's, which the burst claim records in too
    woken: list[int]  # how often the burster woke the loop for new capacity
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def oslo(self) -> KubernetesConnector:
        connector = self.connectors["oslo"]
        assert isinstance(connector, KubernetesConnector)
        return connector

    async def submit(
        self,
        name: str,
        *,
        tier: Tier = Tier.P1,
        gpus: int = 8,
        models: tuple[str, ...] = ("H100",),
        tenant: str = "vision",
        duration_s: int = 3600,
    ) -> Job:
        spec = JobSpec(
            name=name,
            tier=tier,
            kind=JobKind.TRAINING,
            resources=Resources(gpus=gpus, gpu_models=models, cpu=4.0, memory_gb=32.0),
            workload=Workload(image="nvcr.io/nvidia/pytorch:24.05-py3", command=("train",)),
            estimated_duration_s=duration_s,
        )
        job, _ = await self.store.create_job(tenant=tenant, spec=spec)
        return job

    async def state(self, job: Job) -> JobState:
        return (await self.store.get_job(job.id)).job.state

    async def wait_for(self, jobs: Iterable[Job], state: JobState, within_s: float = 10) -> None:
        """Until every job is in `state` (the cluster's watch is applied by a task)."""
        jobs = list(jobs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            states = [await self.state(j) for j in jobs]
            if all(s is state for s in states):
                return
            if loop.time() > deadline:
                pytest.fail(f"jobs stuck in {states}, wanted {state}")
            await asyncio.sleep(0.02)

    def run(self, job: Job) -> None:
        self.kube.run_job(L.job_name(job.id))

    def finish(self, job: Job) -> None:
        self.kube.finish_job(L.job_name(job.id), succeeded=True)

    def join(
        self,
        instances: Sequence[CloudInstance],
        *,
        product: str = o.H100,
        gpus: int = 8,
        names: Sequence[str] | None = None,
    ) -> list[str]:
        """The instances' nodes register with the cluster, Ready, with their providerIDs."""
        added = []
        for i, inst in enumerate(sorted(instances, key=lambda c: c.id)):
            name = names[i] if names is not None else inst.id
            node = o.gpu_node(
                name, product=product, gpus=gpus, memory_mib=81559 if product == o.H100 else 40960
            )
            node["spec"]["providerID"] = inst.extra["provider_id"]
            self.kube.add_node(node)
            added.append(name)
        return added

    def leave(self, names: Iterable[str]) -> None:
        """The cloud controller deletes the nodes of terminated instances."""
        for name in names:
            self.kube.nodes.pop(name, None)

    async def actions(self, kind: ActionKind | None = None) -> list[CapacityAction]:
        now = self.clock.now()
        return await self.capacity.actions(
            start=now - timedelta(days=30), end=now + timedelta(seconds=1), kind=kind
        )

    async def pool_nodes(self, pool_id: str) -> int:
        return next(p.nodes for p in await self.store.pools() if p.id == pool_id)


def oslo_site() -> SiteSettings:
    return SiteSettings(
        name="oslo",
        kind=SiteKind.KUBERNETES,
        region="oslo",
        location="aws:eu-north-1",
        grid_zone="NO",
        private=True,
    )


def aws_site(*, endpoint_url: str, user_data: Path, **connector: Any) -> SiteSettings:
    return SiteSettings(
        name="aws-east",
        kind=SiteKind.AWS,
        region="us-east-1",
        location="aws:us-east-1",
        grid_zone="US-MIDA-PJM",
        connector={
            "endpoint_url": endpoint_url,
            "image_id": "ami-12c6146b",
            "user_data_file": user_data.name,
            "instance_types": ["p5.48xlarge", "p4d.24xlarge"],
            "max_nodes": 8,
            **connector,
        },
    )


def gcp_site(compute: FakeCompute, *, key_file: Path, **connector: Any) -> SiteSettings:
    return SiteSettings(
        name="gcp-central",
        kind=SiteKind.GCP,
        region="us-central1",
        location="gcp:us-central1",
        grid_zone="US-CAL-CISO",  # a cleaner grid than us-east-1's, for the ranking
        connector={
            "project": compute.project,
            "credentials_file": key_file.name,
            "api_endpoint": compute.endpoint,
            "zones": ["us-central1-a", "us-central1-b", "us-central1-c"],
            "startup_script_file": "join.sh",
            **connector,
        },
    )


async def build_world(
    *,
    tmp_path: Path,
    clock: ManualClock,
    kube: FakeKubernetes,
    blocking: Blocking,
    clouds: Sequence[SiteSettings],
    burst: dict[str, Any],
    prices: Mapping[str, float] | None = None,
    forecast: ShortfallSource | None = None,
) -> World:
    """Connect everything, sync every site's inventory, start following the cluster."""
    context = BuildContext(config_dir=tmp_path, blocking=blocking, clock=clock)
    kubeconfig = tmp_path / "oslo.kubeconfig"
    write_kubeconfig(kubeconfig, {"fake": (kube.url, kube.token)}, current="fake")
    oslo = KubernetesConnector(
        site=site_from_settings(oslo_site()),
        settings=KubernetesSettings(
            kubeconfig=kubeconfig,
            context=None,
            in_cluster=False,
            watch_timeout_s=5,
            request_timeout_s=5.0,
            price_per_gpu_hour=dict(prices or {"H100": 2.0, "A100": 1.0}),
        ),
        loader=kubeconfig_loader(kubeconfig, None),
        clock=clock,
        blocking=blocking,
        sleep=no_sleep,
    )
    connectors: dict[str, Connector] = {"oslo": oslo}
    for site in clouds:
        if site.kind is SiteKind.AWS:
            connectors[site.name] = AwsConnector.build(
                site=site,
                context=context,
                backoff=ZERO_BACKOFF,
                sleep=no_sleep_at_all,
            )
        else:
            connectors[site.name] = GcpConnector(
                settings=parse_gcp(site, config_dir=tmp_path),
                site=site_from_settings(site),
                clock=clock,
                blocking=blocking,
                backoff=ZERO_BACKOFF,
                sleep=no_sleep_at_all,
            )
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}")
    await upgrade(engine)
    sessions = session_factory(engine)
    store = Store(sessions=sessions, clock=clock)
    capacity = CapacityStore(sessions=sessions, clock=clock)
    for connector in connectors.values():
        await connector.start()
        inv = await connector.inventory()
        await store.sync_site(inv.site, inv.pools)
    carbon = FixedCarbon(INTENSITY)
    latency = LatencyMatrix({})
    metrics = Metrics()
    loop = SchedulingLoop(
        store=store,
        connectors=connectors,
        carbon=carbon,
        latency=latency,
        settings=SchedulerSettings(),
        clock=clock,
        metrics=metrics,
    )
    values: dict[str, Any] = {
        "enabled": True,
        "targets": [BurstTarget(provider=s.name, joins="oslo") for s in clouds],
        "idle_ttl_s": 600.0,
        "join_timeout_s": 900.0,
    }
    values.update(burst)
    woken: list[int] = []

    def on_capacity() -> None:
        woken.append(1)
        loop.wake(capacity_changed=True)

    burster = Burster(
        settings=BurstSettings.model_validate(values),
        store=store,
        capacity=capacity,
        connectors=connectors,
        engine=loop.engine,
        applier=loop.applier,
        latency=latency,
        carbon=carbon,
        clock=clock,
        forecast=forecast,
        on_capacity=on_capacity,
    )
    world = World(
        clock=clock,
        db=engine,
        store=store,
        capacity=capacity,
        kube=kube,
        connectors=connectors,
        loop=loop,
        burster=burster,
        metrics=metrics,
        woken=woken,
    )
    world.tasks.append(asyncio.create_task(loop.follow(oslo), name="follow:oslo"))
    return world


async def close_world(world: World) -> None:
    for task in world.tasks:
        task.cancel()
    for connector in world.connectors.values():
        await connector.close()
    for task in world.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await world.db.dispose()


def gcp_key(compute: FakeCompute, tmp_path: Path) -> Path:
    key = ServiceAccountKey.generate(email="broker@broker-test.iam.gserviceaccount.com")
    compute.auth.register(key)
    (tmp_path / "join.sh").write_text("#!/bin/sh\nkubeadm join 10.0.0.2:6443\n", encoding="utf-8")
    return key.json_file(
        tmp_path / "broker-sa.json", token_uri=f"{compute.endpoint}/token", project=compute.project
    )


def new_kube() -> FakeKubernetes:
    return FakeKubernetes(token=new_token())
