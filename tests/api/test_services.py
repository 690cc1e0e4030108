"""Inference services over the API on the demo fleet: create, scale, roll, zero, delete.

The demo fleet's load is replaced by a constant (`SIM_LOAD=<rps>` in the workload's env),
so each test knows what the autoscaler sees; the controller and the scheduler tick every
0.2 s and simulated replicas start in 0.02 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.api.keys import STORE
from broker.service import create_app
from tests.api.test_errors import problem
from tests.conftest import ADMIN, NLP, VISION, fast_settings

Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: Any, database_url: str) -> AsyncIterator[Client]:
    settings = fast_settings(database_url, **{"serving.interval_s": 0.2})
    app: web.Application = create_app(settings)
    cli: Client = await aiohttp_client(app)
    yield cli
    await cli.close()


def service_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "chat",
        "resources": {"gpus": 1, "gpu_models": ["L4"]},
        "workload": {
            "image": "ghcr.io/example/chat:1",
            "port": 8000,
            "readiness_path": "/ready",
            "env": {"SIM_LOAD": "0"},
        },
        "min_replicas": 1,
        "max_replicas": 4,
        "autoscaling": {
            "metric": "rps",
            "target": 10,
            "stable_window_s": 6,
            "scale_down_delay_s": 0,
            "scale_to_zero_after_s": 1,
        },
    }
    body.update(overrides)
    return body


async def create(client: Client, body: dict[str, Any], headers: dict[str, str] = VISION) -> str:
    resp = await client.post("/v1/services", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"] == f"/v1/services/{(await resp.json())['id']}"
    return str((await resp.json())["id"])


async def show(client: Client, service_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/services/{service_id}", headers=VISION)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def until(
    client: Client,
    service_id: str,
    done: Callable[[dict[str, Any]], bool],
    *,
    within_s: float = 15.0,
    each: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        body = await show(client, service_id)
        if each is not None:
            each(body)
        if done(body):
            return body
        if loop.time() > deadline:
            pytest.fail(f"service {service_id} never got there: {body}")
        await asyncio.sleep(0.1)


async def metric_shows(client: Client, line: str) -> None:
    """Wait for `line` in /metrics (the controller sets its figures at its next tick)."""
    for _ in range(50):
        if line in await (await client.get("/metrics", headers=ADMIN)).text():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"never in /metrics: {line}")


def ready(body: dict[str, Any]) -> int:
    return sum(1 for r in body["replicas"] if r["ready"])


async def test_a_service_scales_with_its_load_and_says_why(client: Client) -> None:
    svc = await create(client, service_body())
    body = await until(client, svc, lambda b: ready(b) == 1 and b["desired_replicas"] == 1)
    assert body["decisions"] and body["decisions"][0]["reason"]
    # the replica's start-up at its site is measured and remembered for later leaseholders
    site = body["replicas"][0]["site"]
    remembered = await client.app[STORE].startup_times()
    for _ in range(30):
        if site in remembered:
            break
        await asyncio.sleep(0.1)
        remembered = await client.app[STORE].startup_times()
    assert 0 <= remembered[site] < 10, remembered
    # 25 rps at 10 per replica (70 % target utilisation): ceil(25 / 7) = 4, the maximum
    patch = {"workload": {"env": {"SIM_LOAD": "25"}}}
    resp = await client.patch(f"/v1/services/{svc}", json=patch, headers=VISION)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["generation"] == 2  # env changed: a new generation
    body = await until(
        client,
        svc,
        lambda b: ready(b) == 4 and all(r["generation"] == 2 for r in b["replicas"]),
    )
    assert body["load"]["value"] == 25 and body["load"]["metric"] == "rps"
    reasons = " ".join(d["reason"] for d in body["decisions"])
    assert "25" in reasons
    # each replica added says where it went and why (the grid, the spread)
    assert "+1 on " in reasons and "gCO2" in reasons, reasons
    sites = [r["site"] for r in body["replicas"]]
    assert max(sites.count(s) for s in set(sites)) <= 2  # no site holds most of them
    await metric_shows(client, f'broker_service_replicas{{kind="ready",service="{svc}"}} 4.0')


async def test_a_rolling_update_never_drops_below_ready_capacity(client: Client) -> None:
    svc = await create(client, service_body(min_replicas=3))
    await until(client, svc, lambda b: ready(b) == 3)
    lowest: list[int] = []
    patch = {"workload": {"image": "ghcr.io/example/chat:2"}}
    resp = await client.patch(f"/v1/services/{svc}", json=patch, headers=VISION)
    assert resp.status == 200, await resp.text()
    body = await until(
        client,
        svc,
        lambda b: len(b["replicas"]) == 3 and all(r["generation"] == 2 for r in b["replicas"]),
        each=lambda b: lowest.append(ready(b)),
    )
    assert min(lowest) >= 3, lowest
    assert body["spec"]["workload"]["image"] == "ghcr.io/example/chat:2"


async def test_scale_to_zero_and_wake_on_load(client: Client) -> None:
    body = service_body(min_replicas=0)
    body["workload"]["env"] = {"SIM_LOAD": "3"}
    svc = await create(client, body)
    await until(client, svc, lambda b: ready(b) == 1)
    # created at zero with load waiting: the first replica is a cold start too
    await metric_shows(client, "broker_service_cold_start_seconds_count 1.0")
    idle = {"workload": {"env": {"SIM_LOAD": "0"}}}
    resp = await client.patch(f"/v1/services/{svc}", json=idle, headers=VISION)
    assert resp.status == 200, await resp.text()
    body = await until(client, svc, lambda b: b["desired_replicas"] == 0 and not b["replicas"])
    assert body["decisions"][0]["mode"] == "zero", body["decisions"]
    patch = {"workload": {"env": {"SIM_LOAD": "3"}}}
    resp = await client.patch(f"/v1/services/{svc}", json=patch, headers=VISION)
    assert resp.status == 200, await resp.text()
    body = await until(client, svc, lambda b: ready(b) == 1)
    assert any(d["mode"] == "activation" for d in body["decisions"]), body["decisions"]
    await metric_shows(client, "broker_service_cold_start_seconds_count 2.0")


async def test_a_signal_raises_the_floor_for_its_period(client: Client) -> None:
    svc = await create(client, service_body())
    await until(client, svc, lambda b: ready(b) == 1)
    until_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    resp = await client.post(
        f"/v1/services/{svc}/signals",
        json={"until": until_at, "factor": 3.0, "note": "campaign"},
        headers=VISION,
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["replicas"] == 3
    body = await until(client, svc, lambda b: ready(b) == 3)
    assert body["decisions"][0]["mode"] == "floor" and "campaign" in body["decisions"][0]["reason"]


async def test_delete_drains_then_removes_everything(client: Client) -> None:
    svc = await create(client, service_body(min_replicas=2))
    body = await until(client, svc, lambda b: ready(b) == 2)
    replica_ids = [r["job_id"] for r in body["replicas"]]
    resp = await client.delete(f"/v1/services/{svc}", headers=VISION)
    assert resp.status == 202 and (await resp.json())["state"] == "deleting"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (await client.get(f"/v1/services/{svc}", headers=VISION)).status != 404:
        assert loop.time() < deadline, "the service was never removed"
        await asyncio.sleep(0.1)
    for job_id in replica_ids:
        job = await (await client.get(f"/v1/jobs/{job_id}", headers=VISION)).json()
        assert job["state"] == "cancelled"
    inventory = await (await client.get("/v1/inventory", headers=ADMIN)).json()
    assert all(p["allocated_gpus"] == 0 for p in inventory["items"])
    listed = await (await client.get("/v1/services", headers=VISION)).json()
    assert listed["items"] == []
    report = await (
        await client.get("/v1/reports/sustainability?group_by=service", headers=VISION)
    ).json()
    [group] = [g for g in report["groups"] if g["key"] == svc]
    assert group["runs"] == 2 and group["run_hours"] > 0 and group["energy_kwh"] > 0
    await metric_shows(client, f'broker_service_energy_kwh_total{{service="{svc}"}}')


async def test_other_tenants_cannot_see_or_change_a_service(client: Client) -> None:
    svc = await create(client, service_body())
    for method in ("get", "delete"):
        resp = await getattr(client, method)(f"/v1/services/{svc}", headers=NLP)
        await problem(resp, 404, "not-found")
    resp = await client.patch(f"/v1/services/{svc}", json={"max_replicas": 2}, headers=NLP)
    await problem(resp, 404, "not-found")
    assert (await (await client.get("/v1/services", headers=NLP)).json())["items"] == []
    admin = await (await client.get("/v1/services", headers=ADMIN)).json()
    assert [s["id"] for s in admin["items"]] == [svc]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_replicas": 5, "max_replicas": 2}, "(body)"),
        ({"origins": [{"location": "aws:us-east-1", "share": 0.6}]}, "(body)"),
        ({"latency_slo_ms": 50}, "(body)"),
        ({"resources": {"gpus": 1, "nodes": 2}}, "(body)"),
        ({"resources": {"gpus": 1, "gpu_models": ["B300"]}}, "resources.gpu_models.0"),
        ({"priority": "P3"}, "priority"),
        ({"spot": "prefer"}, "(body)"),
        ({"workload": {"image": "x", "port": 0}}, "workload.port"),
    ],
)
async def test_bad_services_are_refused_and_leave_nothing(
    client: Client, change: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/services", json=service_body(**change), headers=VISION)
    body = await problem(resp, 422, "validation-error")
    assert any(e["field"].startswith(field) for e in body["errors"]), body
    assert (await (await client.get("/v1/services", headers=ADMIN)).json())["items"] == []


async def test_a_bad_patch_changes_nothing(client: Client) -> None:
    svc = await create(client, service_body())
    resp = await client.patch(f"/v1/services/{svc}", json={"max_replicas": 0}, headers=VISION)
    await problem(resp, 422, "validation-error")
    resp = await client.patch(f"/v1/services/{svc}", json=[1, 2], headers=VISION)
    await problem(resp, 422, "validation-error")
    body = await show(client, svc)
    assert body["generation"] == 1 and body["spec"]["max_replicas"] == 4


async def test_create_is_idempotent_with_a_key(client: Client) -> None:
    headers = {**VISION, "Idempotency-Key": "svc-1"}
    first = await client.post("/v1/services", json=service_body(), headers=headers)
    again = await client.post("/v1/services", json=service_body(), headers=headers)
    assert first.status == again.status == 201
    assert (await first.json())["id"] == (await again.json())["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post("/v1/services", json=service_body(name="other"), headers=headers)
    await problem(other, 409, "idempotency-key-reused")


async def test_a_merge_patch_changes_bounds_without_a_new_generation(client: Client) -> None:
    svc = await create(client, service_body(origins=[{"location": "aws:us-east-1", "share": 1}]))
    resp = await client.patch(
        f"/v1/services/{svc}",
        data=b'{"max_replicas": 2, "origins": null}',
        headers={**VISION, "Content-Type": "application/merge-patch+json"},
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["generation"] == 1  # bounds only: the replicas run the same thing
    assert body["spec"]["max_replicas"] == 2 and body["spec"]["origins"] == []


async def test_max_hourly_cost_caps_the_replicas(client: Client) -> None:
    """25 rps wants 4 replicas; at 0.45 USD per L4-hour (the cheapest) 1 USD buys two."""
    body = service_body(max_hourly_cost=1.0)
    body["workload"]["env"] = {"SIM_LOAD": "25"}
    svc = await create(client, body)
    body = await until(client, svc, lambda b: b["desired_replicas"] == 4 and ready(b) == 2)
    await asyncio.sleep(1.0)  # several controller ticks later: still two
    body = await show(client, svc)
    assert len(body["replicas"]) == 2, body["replicas"]
