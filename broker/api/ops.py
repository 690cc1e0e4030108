"""Operational routes: liveness, readiness, metrics, the OpenAPI document and its page."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from broker.api.auth import authenticate, require
from broker.api.keys import CAPACITY, ENGINE, LEADER, METRICS, SETTINGS, STORE, VERIFIER
from broker.api.openapi import DOCS_HTML, openapi_document
from broker.api.schemas import HealthOut
from broker.db.connection import current_revision, head_revision
from broker.domain.enums import Role

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response(text=HealthOut(status="ok").model_dump_json())


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(5):
            async with request.app[ENGINE].connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await current_revision(request.app[ENGINE])
        checks["database"] = "ok"
        head = head_revision()
        checks["schema"] = "ok" if current == head else f"at {current}, expected {head}"
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values()) and len(checks) == 2
    body = HealthOut(status="ok" if ok else "unavailable", checks=checks)
    return web.json_response(text=body.model_dump_json(), status=200 if ok else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; fleet-wide, so an operator's when `auth.metrics_token_required`."""
    if request.app[SETTINGS].auth.metrics_token_required:
        require(authenticate(request, request.app[VERIFIER]), Role.OPERATOR)
    m = request.app[METRICS]
    m.set_job_counts(await request.app[STORE].count_by_state())
    alive: dict[str, tuple[int, float]] = {}
    for inst in await request.app[CAPACITY].alive_instances():
        count, usd = alive.get(inst.provider_site, (0, 0.0))
        alive[inst.provider_site] = (count + 1, usd + inst.usd_per_hour)
    m.set_burst(alive)
    m.leader.set(1 if request.app[LEADER].is_leader else 0)
    return web.Response(body=m.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_HTML, content_type="text/html")
