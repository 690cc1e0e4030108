"""The aiohttp application: middlewares and routes. Service wiring is in `broker.service`."""

from __future__ import annotations

import time

from aiohttp import web

from broker.api import admin, capacity, fleet, jobs, ops, reports, services
from broker.api.auth import authenticate
from broker.api.context import set_principal
from broker.api.keys import METRICS, VERIFIER
from broker.api.problems import Handler, problem_middleware
from broker.api.redaction import redaction_middleware


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        m = request.app[METRICS]
        m.requests.labels(method=request.method, route=name, status=str(status)).inc()
        m.request_seconds.labels(method=request.method, route=name).observe(
            time.perf_counter() - started
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/") and request.match_info.route.resource is not None:
        set_principal(request, authenticate(request, request.app[VERIFIER]))
    return await handler(request)


def add_api(app: web.Application, *, v1: bool = True) -> None:
    """Middlewares and routes; without `v1` (the scheduler role) only the operational ones:
    health, readiness, metrics and the API document."""
    app.middlewares.extend(
        [metrics_middleware, redaction_middleware, problem_middleware, auth_middleware]
    )
    app.add_routes(ops.routes)
    if not v1:
        return
    app.add_routes(jobs.routes)
    app.add_routes(fleet.routes)
    app.add_routes(admin.routes)
    app.add_routes(reports.routes)
    app.add_routes(capacity.routes)
    app.add_routes(services.routes)
