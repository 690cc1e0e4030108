"""Helpers shared by the Kubernetes connector tests: jobs, placements, update reading."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

from broker.domain.enums import JobKind, JobState, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, JobSpec, Placement, Resources, Workload
from connectors.base import StatusUpdate

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def new_token() -> str:
    return f"k8s-token-{secrets.token_hex(12)}"


def make_job(
    job_id: str = "job-0a1b2c3d4e5f",
    *,
    gpus: int = 1,
    tier: Tier = Tier.P2,
    mig_profile: str | None = None,
    gpu_fraction: float | None = None,
    nodes: int = 1,
    tenant: str = "vision",
) -> Job:
    spec = JobSpec(
        name="train",
        tier=tier,
        kind=JobKind.TRAINING,
        resources=Resources(
            gpus=gpus,
            mig_profile=mig_profile,
            gpu_fraction=gpu_fraction,
            nodes=nodes,
            cpu=4.0,
            memory_gb=32.0,
        ),
        workload=Workload(
            image="nvcr.io/nvidia/pytorch:24.05-py3",
            command=("python", "train.py"),
            env={"EPOCHS": "3", "BATCH": "64"},
        ),
        estimated_duration_s=3600,
    )
    return Job(
        id=job_id,
        tenant=tenant,
        spec=spec,
        state=JobState.SCHEDULED,
        created_at=START,
        updated_at=START,
    )


def placement_for(
    job: Job,
    pool: GpuPool,
    *,
    external_id: str | None = None,
    nodes: tuple[str, ...] | None = None,
) -> Placement:
    """The job placed on `nodes` of the pool (by default its first nodes, by name)."""
    demand = job.spec.resources.demand
    return Placement(
        job_id=job.id,
        site=pool.site,
        pool_id=pool.id,
        gpu_milli=job.spec.resources.total_milli,
        price_per_gpu_hour=pool.price_on_demand,
        spot=False,
        estimated_cost_usd=0.0,
        estimated_gco2=None,
        created_at=START,
        external_id=external_id,
        node_names=pool.names()[: job.spec.resources.nodes] if nodes is None else nodes,
        cpu_milli=demand.cpu_milli,
        memory_mb=demand.memory_mb,
    )


async def next_update(stream: Any, within_s: float = 5.0) -> StatusUpdate:
    update: StatusUpdate = await asyncio.wait_for(anext(stream), within_s)
    return update


def site(name: str = "oslo") -> Site:
    return Site(
        name=name,
        kind=SiteKind.KUBERNETES,
        region="oslo",
        location="aws:eu-north-1",
        grid_zone="NO",
        private=True,
    )
