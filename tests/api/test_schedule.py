"""The running broker leads the scheduled duties and shows them at /v1/admin/schedule."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.service import create_app
from tests.conftest import ADMIN, VISION, fast_settings

FAST = {
    "schedule.lease_ttl_s": 1.5,
    "schedule.renew_s": 0.3,
    "schedule.inventory_every_s": 0.3,
    "schedule.carbon_every_s": 0.3,
    "schedule.plan_every_s": 0.5,
    "schedule.reclaim_every_s": 0.5,
}


async def _schedule(cli: TestClient[Any, Any]) -> dict[str, Any]:
    resp = await cli.get("/v1/admin/schedule", headers=ADMIN)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def test_the_replica_leads_and_each_duty_runs_and_reports(
    aiohttp_client: Any, database_url: str
) -> None:
    app: web.Application = create_app(fast_settings(database_url, **FAST))
    cli: TestClient[Any, Any] = await aiohttp_client(app)
    try:
        wanted = {"refresh_inventory", "refresh_carbon", "plan_capacity", "reclaim_idle"}
        body: dict[str, Any] = {}
        for _ in range(100):  # up to 10 s; typically about 1 s
            body = await _schedule(cli)
            done = {j["job"] for j in body["jobs"] if j["outcome"] == "ok"}
            if body["is_leader"] and wanted <= done:
                break
            await asyncio.sleep(0.1)
        assert body["is_leader"] and body["leader"] == body["replica"]
        jobs = {j["job"]: j for j in body["jobs"]}
        assert wanted <= {n for n, j in jobs.items() if j["outcome"] == "ok"}, jobs
        assert jobs["refresh_inventory"]["summary"] == "5 site(s): 5 read"
        assert jobs["refresh_carbon"]["summary"].startswith("carbon outlook refreshed for")
        assert "bursting is off" in jobs["plan_capacity"]["summary"]
        assert "bursting is off" in jobs["reclaim_idle"]["summary"]
        assert jobs["retrain_forecast"]["next_run_at"] is not None

        resp = await cli.get("/v1/admin/schedule", headers=VISION)
        assert resp.status == 403
    finally:
        await cli.close()
