"""The running service with bursting configured: the burster is built from the YAML, the
scheduled duties drive it against the real connectors, and the API shows its plan."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import TestClient, TestServer

from broker.api.auth import hash_token
from broker.config import load_settings
from broker.service import create_app
from tests.burst.world import aws_site, oslo_site
from tests.connectors.aws.conftest import owned_ids, raw_ec2
from tests.connectors.aws.fakes import StubProxy
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.fake_api import FakeKubernetes, write_kubeconfig

TOKEN = "ops-token-for-the-burst-service-test"
BIG = {
    "name": "big",
    "priority": "P1",
    "kind": "training",
    "resources": {"gpus": 8, "nodes": 2, "gpu_models": ["H100"]},
    "workload": {"image": "img"},
    "estimated_duration_s": 3600,
}
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _config(tmp_path: Path, *, kube: FakeKubernetes, endpoint_url: str, user_data: Path) -> Path:
    write_kubeconfig(tmp_path / "oslo.kubeconfig", {"fake": (kube.url, kube.token)}, current="fake")
    oslo = oslo_site().model_dump(mode="json", exclude_none=True)
    oslo["connector"] = {
        "kubeconfig": "oslo.kubeconfig",
        "kueue_queue": "gpu-broker",  # Kueue admits a gang's pods together
        "price_per_gpu_hour": {"H100": 2.0},
        "watch_timeout_s": 5,
        "request_timeout_s": 5.0,
    }
    aws = aws_site(endpoint_url=endpoint_url, user_data=user_data)
    config: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}",
        "auth": {
            "tokens": [
                {"name": "ops", "tenant": "platform", "role": "admin", "hash": hash_token(TOKEN)}
            ]
        },
        "scheduler": {"interval_s": 0.2},
        "schedule": {
            "lease_ttl_s": 1.5,
            "renew_s": 0.3,
            "plan_every_s": 0.3,
            "reclaim_every_s": 0.3,
            "inventory_every_s": 0.3,
        },
        "burst": {
            "enabled": True,
            "targets": [{"provider": "aws-east", "joins": "oslo"}],
            "wait_target_s": {"P1": 0},
        },
        "sites": [oslo, aws.model_dump(mode="json", exclude_none=True)],
    }
    path = tmp_path / "broker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def test_the_service_plans_bursts_through_its_duties(
    tmp_path: Path, kube: FakeKubernetes, proxy: StubProxy, moto_url: str, user_data: Path
) -> None:
    kube.add_node(o.gpu_node("gpu-a"))
    path = _config(tmp_path, kube=kube, endpoint_url=proxy.url, user_data=user_data)
    app = create_app(load_settings(path, env={}))
    async with TestClient(TestServer(app)) as client:
        # The duties run on the leader: plan_capacity goes through the burster, on EC2.
        jobs: dict[str, Any] = {}
        for _ in range(100):
            body = await (await client.get("/v1/admin/schedule", headers=ADMIN)).json()
            jobs = {j["job"]: j for j in body["jobs"]}
            if all(
                jobs.get(n, {}).get("outcome") == "ok" for n in ("plan_capacity", "reclaim_idle")
            ):
                break
            await asyncio.sleep(0.1)
        assert jobs["plan_capacity"]["outcome"] == "ok", jobs
        assert jobs["plan_capacity"]["summary"] == "no burst needed"
        assert jobs["refresh_inventory"]["summary"] == "2 site(s): 2 read"

        # Nothing waits, so the dry run plans nothing; bursting is on and says so.
        resp = await client.get("/v1/forecasts/capacity?horizon=2h", headers=ADMIN)
        assert resp.status == 200, await resp.text()
        forecast = await resp.json()
        assert forecast["burst"]["enabled"] is True
        assert forecast["burst"]["planned"] == [] and forecast["burst"]["unreachable"] == {}
        assert forecast["reasoning"][-1] == "no burst needed now"
        assert [m["gpu_model"] for m in forecast["models"]] == []
        # The EC2 site answered the burster's inventory reads through the proxy.
        assert proxy.calls("DescribeInstanceTypes")

        # A P1 gang job bigger than the private cluster is accepted because a burst can
        # serve it, and the next planning pass starts two p5 instances for it.
        resp = await client.post("/v1/jobs", json=BIG, headers=ADMIN)
        assert resp.status == 201, await resp.text()
        job_id = (await resp.json())["id"]
        items: list[dict[str, Any]] = []
        for _ in range(100):
            resp = await client.get("/v1/capacity/actions", headers=ADMIN)
            items = (await resp.json())["items"]
            if items and items[0]["instance_ids"]:  # recorded first, then provisioned
                break
            await asyncio.sleep(0.1)
        (burst,) = items
        assert (burst["kind"], burst["for_jobs"], burst["count"]) == ("burst", [job_id], 2)
        assert burst["provider_site"] == "aws-east" and burst["joins_site"] == "oslo"
        running = owned_ids(raw_ec2(moto_url), site="aws-east", states=("pending", "running"))
        assert running == set(burst["instance_ids"]) and len(running) == 2
