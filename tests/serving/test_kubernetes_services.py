"""A service on a Kubernetes-only fleet, end to end through the whole broker and the fake
Kubernetes API: it scales up under load, rolls an image update without dropping below its
ready capacity, scales to zero, wakes on load, and is deleted leaving nothing behind.

The load is the demo source's constant (`SIM_LOAD=<rps>` in the workload's env); replica
readiness is the fake cluster's to give, held back during the roll so the old replicas
must keep serving while the new ones start. SQLite only: the PostgreSQL paths are the
services API's own tests'.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from broker.api.auth import hash_token
from broker.config import load_settings
from broker.service import create_app
from connectors.kubernetes.labels import GENERATION_LABEL, OWNER_LABEL, service_name
from tests.api.test_services import create, service_body, until
from tests.api.test_services import ready as ready_replicas
from tests.burst.world import oslo_site
from tests.conftest import VISION
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.fake_api import FakeKubernetes, write_kubeconfig
from tests.connectors.kubernetes.helpers import new_token

Client = TestClient[Any, Any]
OWNER = "gpu-broker"


@pytest.fixture
async def kube() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes(token=new_token())
    server.add_node(o.gpu_node("gpu-a"))
    server.add_node(o.gpu_node("gpu-b"))
    await server.start()
    yield server
    await server.stop()


def _config(tmp_path: Path, kube: FakeKubernetes) -> Path:
    write_kubeconfig(tmp_path / "oslo.kubeconfig", {"fake": (kube.url, kube.token)}, current="fake")
    oslo = oslo_site().model_dump(mode="json", exclude_none=True)
    oslo["connector"] = {
        "kubeconfig": "oslo.kubeconfig",
        "price_per_gpu_hour": {"H100": 2.0},
        "watch_timeout_s": 5,
        "request_timeout_s": 5.0,
    }
    token = VISION["Authorization"].removeprefix("Bearer ")
    config: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}",
        "auth": {
            "tokens": [
                {
                    "name": "vision",
                    "tenant": "vision-team",
                    "role": "user",
                    "hash": hash_token(token),
                }
            ]
        },
        "scheduler": {"interval_s": 0.2},
        "serving": {"interval_s": 0.2},
        "schedule": {
            "lease_ttl_s": 1.5,
            "renew_s": 0.3,
            "plan_every_s": 0.3,
            "reclaim_every_s": 0.3,
            "inventory_every_s": 0.3,
        },
        "sites": [oslo],
    }
    path = tmp_path / "broker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def owned(objects: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        v for v in objects.values() if v["metadata"].get("labels", {}).get(OWNER_LABEL) == OWNER
    ]


def ready_deployments(kube: FakeKubernetes) -> int:
    return sum(1 for d in owned(kube.deployments) if (d.get("status") or {}).get("readyReplicas"))


async def eventually(condition: Callable[[], bool], what: str, within_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.1)


async def patch(client: Client, svc: str, change: dict[str, Any]) -> dict[str, Any]:
    resp = await client.patch(f"/v1/services/{svc}", json=change, headers=VISION)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_a_service_on_kubernetes_scales_rolls_sleeps_wakes_and_goes(
    tmp_path: Path, kube: FakeKubernetes
) -> None:
    app = create_app(load_settings(_config(tmp_path, kube), env={}))
    async with TestClient(TestServer(app)) as client:
        body = service_body(min_replicas=0, max_replicas=3)
        body["resources"] = {"gpus": 1, "gpu_models": ["H100"]}
        body["workload"]["env"] = {"SIM_LOAD": "25"}  # wants ceil(25 / 7) = 4: the max, 3
        svc = await create(client, body)
        the_service = ("gpu-broker", service_name(svc))

        # Scales up: three replicas, each a ready one-pod Deployment bound to a node, all
        # behind the service's one Service.
        shown = await until(client, svc, lambda b: ready_replicas(b) == 3, within_s=30)
        assert {r["site"] for r in shown["replicas"]} == {"oslo"}
        assert len(owned(kube.deployments)) == ready_deployments(kube) == 3
        pods = owned(kube.pods)
        assert len(pods) == 3 and all(p["spec"].get("nodeName") for p in pods)
        assert kube.services[the_service]["spec"]["ports"][0]["port"] == 8000
        assert kube.jobs == {}

        # Rolls the image: new-generation Deployments come up (held not ready for a while),
        # the old ones go only as they become ready; ready capacity never drops.
        before = ready_replicas(shown)
        lowest: list[int] = []

        def watch_capacity(b: dict[str, Any]) -> None:
            lowest.append(min(ready_replicas(b), ready_deployments(kube)))

        kube.hold_readiness = True
        rolled = await patch(client, svc, {"workload": {"image": "ghcr.io/example/chat:2"}})
        assert rolled["generation"] == 2
        await until(client, svc, lambda _: len(kube.held()) >= 1, each=watch_capacity)
        for _ in range(5):  # the new replicas wait; the old keep serving
            watch_capacity(await until(client, svc, lambda _: True))
            await asyncio.sleep(0.2)
        assert len(owned(kube.deployments)) > 3  # old and new side by side
        kube.hold_readiness = False
        for name in kube.held():
            kube.make_ready(name)
        shown = await until(
            client,
            svc,
            lambda b: (
                ready_replicas(b) == 3
                and len(b["replicas"]) == 3
                and all(r["generation"] == 2 for r in b["replicas"])
            ),
            each=watch_capacity,
            within_s=30,
        )
        assert min(lowest) >= before, lowest
        await eventually(lambda: len(owned(kube.deployments)) == 3, "the old Deployments go")
        for deploy in owned(kube.deployments):
            assert deploy["metadata"]["labels"][GENERATION_LABEL] == "2"
            (container,) = deploy["spec"]["template"]["spec"]["containers"]
            assert container["image"] == "ghcr.io/example/chat:2"
        assert the_service in kube.services

        # Scales to zero: no Deployment, no pod, and the Service goes with the last one.
        await patch(client, svc, {"workload": {"env": {"SIM_LOAD": "0"}}})
        await until(client, svc, lambda b: b["desired_replicas"] == 0 and not b["replicas"])
        await eventually(lambda: not owned(kube.deployments), "no Deployment left")
        assert not owned(kube.pods) and the_service not in kube.services

        # Wakes on load: one replica, and its Service, again.
        await patch(client, svc, {"workload": {"env": {"SIM_LOAD": "3"}}})
        shown = await until(client, svc, lambda b: ready_replicas(b) == 1, within_s=30)
        assert len(owned(kube.deployments)) == ready_deployments(kube) == 1
        assert the_service in kube.services

        # Deleted: drained, then nothing of it is left in the cluster.
        resp = await client.delete(f"/v1/services/{svc}", headers=VISION)
        assert resp.status == 202, await resp.text()

        async def gone() -> bool:
            return (await client.get(f"/v1/services/{svc}", headers=VISION)).status == 404

        for _ in range(150):
            if await gone():
                break
            await asyncio.sleep(0.1)
        assert await gone(), "the service was never removed"
        await eventually(
            lambda: not owned(kube.deployments) and not owned(kube.pods),
            "no Deployment or pod left",
        )
        assert kube.services == {} and owned(kube.jobs) == []
