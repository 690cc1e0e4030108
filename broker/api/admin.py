"""Admin routes: what the broker is configured with, never a secret."""

from __future__ import annotations

from aiohttp import web

from broker.api.auth import require
from broker.api.context import principal
from broker.api.keys import CARBON, CLOCK, CONNECTORS, LEADER, SETTINGS, STORE
from broker.api.schemas import (
    CheckItemOut,
    ProviderListOut,
    ProviderOut,
    ScheduledJobOut,
    ScheduleOut,
    TokenListOut,
    TokenOut,
)
from broker.checks import check_carbon, check_running, hint_for
from broker.domain.enums import Role
from connectors.base import Connector

routes = web.RouteTableDef()


@routes.get("/v1/admin/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    """The configured tokens by name, tenant and role; hashes stay in the config file."""
    require(principal(request), Role.ADMIN)
    tokens = request.app[SETTINGS].auth.tokens
    out = TokenListOut(
        items=[TokenOut(name=t.name, tenant=t.tenant, role=t.role.value) for t in tokens]
    )
    return web.json_response(text=out.model_dump_json())


@routes.get("/v1/admin/providers")
async def check_providers(request: web.Request) -> web.Response:
    """Each site's connector checks its credentials (named by reference) and permissions now."""
    require(principal(request), Role.ADMIN)
    connectors: dict[str, Connector] = request.app[CONNECTORS]
    results = await check_running(connectors, clock=request.app[CLOCK])
    zones = [s.grid_zone for s in await request.app[STORE].sites() if s.name in connectors]
    results += await check_carbon(
        request.app[CARBON], request.app[SETTINGS].carbon, zones=zones, clock=request.app[CLOCK]
    )
    out = ProviderListOut(
        items=[
            ProviderOut(
                site=r.site,
                kind=r.kind,
                credentials=r.credentials,
                lacks=[a.value for a in r.lacks],
                ok=r.ok,
                checks=[
                    CheckItemOut(name=i.name, ok=i.ok, detail=i.detail, hint=hint_for(i))
                    for i in r.items
                ],
                checked_at=r.checked_at,
            )
            for r in results
        ]
    )
    return web.json_response(text=out.model_dump_json())


@routes.get("/v1/admin/schedule")
async def schedule(request: web.Request) -> web.Response:
    """The scheduled duties: which replica leads, and each duty's last run as seen here."""
    require(principal(request), Role.ADMIN)
    leader = request.app[LEADER]
    status = leader.status()
    runs = leader.last_runs()
    out = ScheduleOut(
        replica=status.replica,
        is_leader=status.is_leader,
        leader=status.holder,
        leader_since=status.since,
        lease_expires_at=status.expires_at,
        last_error=status.last_error,
        jobs=[
            ScheduledJobOut(
                job=name,
                last_started_at=r.last_started_at,
                last_finished_at=r.last_finished_at,
                outcome=None if r.outcome is None else r.outcome.value,
                summary=r.summary,
                next_run_at=r.next_run_at,
                runs=r.runs,
                failures=r.failures,
            )
            for name, r in sorted(runs.items())
        ],
    )
    return web.json_response(text=out.model_dump_json())
