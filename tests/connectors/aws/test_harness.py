"""The `harness` fixture honours the contract suite's protocol (a smoke run of each hook)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.domain.clock import SystemClock
from broker.domain.enums import JobKind, JobState, SiteKind, Tier
from broker.domain.jobs import Job, JobSpec, Resources, Workload
from connectors.aws.connector import AwsConnector
from connectors.base import BuildContext
from connectors.errors import AuthFailed, Unsupported
from connectors.threads import Blocking
from tests.conftest import REPO
from tests.connectors.aws.conftest import SITE, AwsHarness, site_settings
from tests.connectors.harness import Harness


def job() -> Job:
    now = datetime(2026, 1, 5, tzinfo=UTC)
    spec = JobSpec(
        name="train",
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=1),
        workload=Workload(image="nvcr.io/nvidia/pytorch:24.05-py3"),
        estimated_duration_s=600,
    )
    return Job(
        id="job-1", tenant="t", spec=spec, state=JobState.SCHEDULED, created_at=now, updated_at=now
    )


async def test_hooks(harness: AwsHarness) -> None:
    typed: Harness = harness
    connector = typed.connector
    placement = await typed.placement(job())
    (pool,) = [p for p in (await connector.inventory()).pools if p.id == placement.pool_id]
    assert placement.pool_id.startswith(f"{SITE}/")
    assert placement.node_names == pool.names()[:1] and placement.node_gpus == ((0,),)
    with pytest.raises(Unsupported):
        await connector.dispatch(job=job(), placement=placement)
    with pytest.raises(Unsupported):
        await connector.adopt(job=job(), placement=placement)
    with pytest.raises(NotImplementedError):
        await typed.finish("i-0123", succeeded=True)

    typed.throttle(2)
    got = await connector.provision(gpu_model="A10G", count=2, spot=False, request_id="h-1")
    assert await typed.remote_ids() == {i.id for i in got}
    again = await connector.provision(gpu_model="A10G", count=2, spot=False, request_id="h-1")
    assert {i.id for i in again} == {i.id for i in got}
    await connector.release(instance_ids=[i.id for i in got])
    await connector.release(instance_ids=[i.id for i in got])
    assert await typed.remote_ids() == set() and await connector.instances() == []

    typed.reject_credentials()
    with pytest.raises(AuthFailed) as info:
        await connector.inventory()
    assert typed.secret not in str(info.value)


def test_from_settings_uses_the_given_pool(tmp_path: Path) -> None:
    with Blocking(1) as pool:
        connector = AwsConnector.from_settings(
            site=site_settings(connector={"image_id": "ami-12c6146b", "user_data_file": "join.sh"}),
            context=BuildContext(config_dir=tmp_path, blocking=pool, clock=SystemClock()),
        )
        assert connector.site_name == SITE and connector.kind is SiteKind.AWS
        assert connector._blocking is pool
        assert connector._user_data == tmp_path / "join.sh"


def test_importing_the_connector_loads_no_sdk() -> None:
    code = (
        "import sys, connectors.aws.connector; "
        "print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"
