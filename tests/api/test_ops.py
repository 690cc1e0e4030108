"""Health, readiness, metrics, the OpenAPI document and the docs page."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import text

from broker.api.keys import ENGINE
from broker.api.openapi import OPERATIONS
from broker.service import create_app
from tests.conftest import VISION, fast_settings, job_body, wait_for_state

Client = TestClient[Any, Any]


async def test_healthz_and_readyz(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "checks": {"database": "ok", "schema": "ok"}}


async def test_readyz_reports_a_schema_behind_head(client: Client) -> None:
    engine = client.app[ENGINE]
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["schema"].startswith("at older")


async def test_readyz_is_503_when_the_database_is_gone(aiohttp_client: Any, tmp_path: Any) -> None:
    db = tmp_path / "gone.db"
    client = await aiohttp_client(create_app(fast_settings(f"sqlite+aiosqlite:///{db}")))
    await client.app[ENGINE].dispose()
    db.unlink()
    (tmp_path / "gone.db").mkdir()  # a directory where the file was: cannot be opened
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["database"].startswith("unreachable")
    (tmp_path / "gone.db").rmdir()


async def test_metrics_count_jobs_requests_and_placements(client: Client) -> None:
    job = await (
        await client.post("/v1/jobs", json=job_body(estimated_duration_s=60), headers=VISION)
    ).json()
    await wait_for_state(client, job["id"], {"succeeded"}, headers=VISION)
    await client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text_ = await resp.text()
    assert 'broker_jobs{state="succeeded"} 1.0' in text_
    assert 'broker_jobs{state="pending"} 0.0' in text_
    assert 'broker_http_requests_total{method="POST",route="/v1/jobs",status="201"} 1.0' in text_
    assert 'broker_http_requests_total{method="GET",route="/v1/jobs",status="401"} 1.0' in text_
    assert "broker_placement_decision_seconds_count" in text_
    assert 'broker_job_wait_seconds_count{tier="P2"} 1.0' in text_


def _served_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method in {"HEAD", "OPTIONS"} or route.resource is None:
            continue
        out.add((route.method.lower(), route.resource.canonical))
    return out


async def test_openapi_describes_every_route_and_nothing_else(client: Client) -> None:
    resp = await client.get("/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert described == _served_routes(client.app)
    assert {(op.method, op.path) for op in OPERATIONS} == described
    # every $ref resolves, and the job body schema forbids unknown fields
    schemas = doc["components"]["schemas"]
    refs = [o for o in _walk(doc) if isinstance(o, str) and o.startswith("#/components/schemas/")]
    assert refs and all(r.rsplit("/", 1)[1] in schemas for r in refs)
    assert schemas["JobIn"]["additionalProperties"] is False
    post = doc["paths"]["/v1/jobs"]["post"]
    assert set(post["responses"]) >= {"201", "400", "401", "409", "413", "415", "422"}
    assert post["responses"]["422"]["content"]["application/problem+json"]


def _walk(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [v for x in node.values() for v in _walk(x)] + list(node.values())
    if isinstance(node, list):
        return [v for x in node for v in _walk(x)]
    return []


async def test_docs_page_is_served(client: Client) -> None:
    resp = await client.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "/openapi.json" in await resp.text()


async def test_explain_ranks_and_states_rejections(client: Client) -> None:
    body = job_body(
        resources={"gpus": 1, "gpu_models": ["L4"]},
        priority="P1",
        kind="inference",
        latency_slo_ms=20,
        origin="aws:us-east-1",
    )
    resp = await client.post("/v1/placements:explain", json=body, headers=VISION)
    assert resp.status == 200
    ev = await resp.json()
    assert ev["winner"]["site"] == "aws-us-east-1"  # the only L4 within 20 ms of us-east-1
    reasons = {(r["site"], r["reason"]) for r in ev["rejected"]}
    assert ("gcp-us-central1", "latency_slo") in reasons
    assert ("oslo-private", "latency_slo") in reasons or ("oslo-private", "gpu_model") in reasons
    assert ("sanjose-private", "gpu_model") in reasons
    w = ev["weights"]
    assert abs(w["cost"] + w["latency"] + w["carbon"] - 1) < 1e-3
    win = ev["winner"]
    assert win["energy_kwh"] > 0
    assert abs(win["gco2"] - win["energy_kwh"] * win["carbon_intensity_gco2_per_kwh"]) < 0.05
    # a dry run writes nothing
    assert (await (await client.get("/v1/jobs", headers=VISION)).json())["items"] == []
