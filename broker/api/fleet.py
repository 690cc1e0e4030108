"""Fleet routes: sites and the GPU inventory.

A site's `health_reason` is usually a provider's error text. Operators and admins see it
(stored redacted and capped by the store, and redacted again here in case a secret was
registered after the row was written); plain users see a short generic reason derived from
the health state and the kind of failure (`public_reason`): why a site takes no work is
theirs to know, a provider's message is not.
"""

from __future__ import annotations

import re

from aiohttp import web

from broker.api.auth import require
from broker.api.context import principal
from broker.api.keys import LOOP, STORE
from broker.api.schemas import InventoryOut, InventoryRowOut, SiteListOut, SiteOut
from broker.domain.enums import Health, Role
from broker.domain.fleet import Site
from redaction import cap, redact

routes = web.RouteTableDef()

# The kind of an unreachable site's failure, from its stored reason; first match wins.
_UNREACHABLE_KINDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (r"^not read yet$", "starting"),
        (r"^not configured$", "not configured"),
        (
            r"unauthori[sz]ed|forbidden|credential|permission|401|403|auth",
            "authentication failed",
        ),
        (r"timed? ?out|timeout|no answer", "timed out"),
    )
)


def public_reason(site: Site) -> str:
    """What a plain user is told about a site's health: never the provider's text."""
    if site.health is Health.HEALTHY:
        return ""
    if site.health is Health.AUTH_FAILED:
        return "unreachable: authentication failed"
    if site.health is Health.DEGRADED:
        return "degraded: part of its capacity is unavailable"
    for pattern, kind in _UNREACHABLE_KINDS:
        if pattern.search(site.health_reason):
            return f"unreachable: {kind}"
    return "unreachable"


@routes.get("/v1/sites")
async def list_sites(request: web.Request) -> web.Response:
    detailed = principal(request).role.at_least(Role.OPERATOR)
    sites = await request.app[STORE].sites()
    out = SiteListOut(
        items=[
            SiteOut(
                name=s.name,
                kind=s.kind.value,
                region=s.region,
                location=s.location,
                grid_zone=s.grid_zone,
                private=s.private,
                pue=s.pue,
                health=s.health.value,
                health_reason=cap(redact(s.health_reason)) if detailed else public_reason(s),
            )
            for s in sites
        ]
    )
    return web.json_response(text=out.model_dump_json())


@routes.get("/v1/inventory")
async def inventory(request: web.Request) -> web.Response:
    require(principal(request), Role.OPERATOR)
    store = request.app[STORE]
    sites = {s.name: s for s in await store.sites()}
    loop = request.app[LOOP]
    intensities = {name: await loop.intensity_now(site.grid_zone) for name, site in sites.items()}
    rows = []
    for p in await store.pools():
        site = sites[p.site]
        rows.append(
            InventoryRowOut(
                site=p.site,
                pool_id=p.id,
                gpu_model=p.gpu_model,
                gpu_memory_gb=p.gpu_memory_gb,
                gpus_per_node=p.gpus_per_node,
                nodes=p.nodes,
                mig_profiles=list(p.mig_profiles),
                total_gpus=p.total_gpus,
                allocated_gpus=round(p.allocated_gpus, 3),
                free_gpus=round(p.free_gpus, 3),
                price_on_demand=p.price_on_demand,
                price_spot=p.price_spot,
                grid_zone=site.grid_zone,
                carbon_intensity_gco2_per_kwh=intensities.get(p.site),
                health=site.health.value,
            )
        )
    return web.json_response(text=InventoryOut(items=rows).model_dump_json())
