"""Fleet routes: sites and the GPU inventory."""

from __future__ import annotations

from aiohttp import web

from broker.api.auth import require
from broker.api.context import principal
from broker.api.keys import LOOP, STORE
from broker.api.schemas import InventoryOut, InventoryRowOut, SiteListOut, SiteOut
from broker.domain.enums import Role

routes = web.RouteTableDef()


@routes.get("/v1/sites")
async def list_sites(request: web.Request) -> web.Response:
    principal(request)
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
                health_reason=s.health_reason,
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
